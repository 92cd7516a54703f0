"""The training methods, one module per family, and the registry they add themselves to.

    base.py    the hooks every method overrides, the knob declaration (`Hyperparameter`), the registry,
               and the plain recipes: vanilla (L_AB only), aux (Eq. 3), unimodal-<m> — imports no method
    miles.py   MILES (Eq. 3 + the scheduler), and miles-lab (the scheduler on L_AB alone: our ablation)

The 2 × 2 that separates what the auxiliary losses do from what the scheduling does:

|                     | no scheduling | MILES scheduling |
|---------------------|---------------|------------------|
| L_AB only           | vanilla       | miles-lab        |
| Eq. 3: L_AB + Σ L_m | aux           | miles            |

The seven methods the MILES paper compares against:

| method  | module    | trains                   | hook                                                     |
|---------|-----------|--------------------------|----------------------------------------------------------|
| ogm     | ogm.py    | L_AB (official) or Eq. 3 | gradient modulation every step (`after_backward`)        |
| ogm-ge  | ogm.py    | same                     | + Gaussian noise on the modulated gradients              |
| gblend  | gblend.py | w_AB L_AB + Σ w_m L_m    | loss weights estimated before epochs (`start_epoch`)     |
| mslr-k  | mslr.py   | Eq. 3                    | fixed per-encoder rates (`setup`)                        |
| mslr-s  | mslr.py   | Eq. 3                    | smoothed per-encoder rates (`setup`)                     |
| mslr-d  | mslr.py   | Eq. 3                    | rates rescaled every w epochs (`end_epoch`)              |
| mses    | mses.py   | Eq. 3                    | per-modality early stopping (`end_epoch`, `should_stop`) |

Recent methods (not in the MILES paper's comparison):

| method   | module      | trains | hook                                                                 |
|----------|-------------|--------|----------------------------------------------------------------------|
| mmpareto | mmpareto.py | Eq. 3  | per-encoder Pareto combination of ∇L_AB and ∇L_m (`loss`, `after_backward`) |
| pmr      | pmr.py      | L_AB + α·prototype CE of the behind modality | class prototypes each epoch (`start_epoch`, `end_epoch`), the extra loss (`loss`) |
| mla      | mla.py      | Σ_m CE(h(z_m)), one shared head h, one optimizer step per modality | the earlier sub-steps (`loss`), the head-gradient projection (`after_backward`), entropy-weighted fusion (`readout`) |
| inforeg  | inforeg.py  | L_AB + Σ_m CE(part_m) | proximal pull of the modality ahead to its epoch-start weights (`after_backward`), Fisher-trace window (`start_epoch`, `end_epoch`) |
| aim-r    | aim_r.py    | L_AB + λ·Σ auxiliary-block losses | a reconstruction of AIM from its abstract: per-depth prototypes and pace masks (`loss`, `after_backward`, `after_step`, `end_epoch`) |

The 2025 methods, each from its official code:

| method | module   | trains | hook |
|--------|----------|--------|------|
| arl    | arl.py   | L_AB + γ·Σ_m CE(zero-out logits) | asymmetric encoder-gradient scales 1 + a_m and clipping (`loss`, `after_backward`) |
| remix  | remix.py | warm-up L_AB + α·Σ L_m; then per-modality subsets, the others masked | per-sample assignment and subset passes (`training_passes`) |
| dgl    | dgl.py   | CE(fusion of detached features) + α·Σ_m CE(zero-out logits, head fixed) | the loss alone, then clipping (`loss`, `after_backward`) |
| aug    | aug.py   | per-modality boosting loss through a shared classifier with growing heads, one step per modality | the earlier steps (`loss`), head checks (`end_epoch`), fixed-weight fusion (`readout`) |

Each class docstring says which published variant it implements and where we had to choose. Adding
a method is adding a module whose class is `@register`-ed with its `hyperparameters`, and one import
line here: its flags, range checks, cache key and search space follow from the declaration.
"""
from .base import (METHODS, EpochMetrics, Hyperparameter, Method, SearchRange, TrainingPass, all_hyperparameters,
                   build_method, check_method_options, hyperparameters_of, is_unimodal, method_names, register,
                   report_name, unimodal_modality, unimodal_name)
from . import miles, mses, mslr, ogm, gblend, mmpareto, pmr, mla, inforeg, aim_r  # noqa: E402,F401  (each registers itself)
from . import arl, remix, dgl, aug  # noqa: E402,F401

MAIN_METHODS = ("vanilla", "miles-lab", "aux", "miles")  # the 2 × 2, in reading order
BASELINES = ("mses", "mslr-k", "mslr-s", "mslr-d", "ogm", "ogm-ge", "gblend")
RECENT_METHODS = ("mmpareto", "pmr", "mla", "inforeg", "aim-r")  # balancing methods published after the MILES paper's baselines
METHODS_2025 = ("arl", "remix", "dgl", "aug")  # the 2025 methods with official code
