"""MSLR-K, MSLR-S, MSLR-D — Yao & Mihalcea, "Modality-specific Learning Rates for Effective
Multimodal Additive Late-fusion", Findings of ACL 2022.

Official code: none public (the paper's repository link is dead); the formulas follow the paper.

Per-encoder learning rates (`setup`), rescaled every w epochs for MSLR-D (`end_epoch`).

Deviations, and why:
- By default (`--mslr-init scratch`) the multimodal model starts from scratch and is trained with
  Eq. 3 (fusion loss + one loss per unimodal head), as the MILES paper compares it. The paper itself
  builds the late-fusion model from unimodal models already trained at their own best rates;
  `--mslr-init unimodal` does that: each encoder and its head start from the selected epoch of a
  unimodal run (same seed and data, its modality's rate), trained or reused in `<run>/init/`, and
  with concat fusion the fusion head starts as their sum (the paper's additive late fusion; our
  fusion head then keeps learning, where the paper's sum has no weights of its own).
- MSLR-S's smoothing is not given in a recoverable form: ours is the linear interpolation below.
- Adam (the MILES paper's optimizer for every method) for all rates.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import UserError
from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register, unimodal_name


def mslr_smoothed_rates(unimodal_lrs: dict[str, float], smoothing: float) -> dict[str, float]:
    """MSLR-S: lr_m = λ·lr_m^uni + (1 − λ)·mean_k lr_k^uni (λ = 1 keeps, λ = 0 equalises)."""
    mean = sum(unimodal_lrs.values()) / len(unimodal_lrs)
    return {m: smoothing * lr + (1 - smoothing) * mean for m, lr in unimodal_lrs.items()}


def mslr_dynamic_factor(metric_history: list[float], window: int) -> float:
    """MSLR-D: M_m(t) / mean(M_m(t−w+1..t)) from a modality's validation metrics (latest last);
    1.0 while fewer than `window` values exist or their mean is 0."""
    if len(metric_history) < window:
        return 1.0
    recent = metric_history[-window:]
    mean = sum(recent) / window
    return recent[-1] / mean if mean > 0 else 1.0



def parse_rates(text: str) -> dict[str, float]:
    """"image=0.001,audio=0.003" → {"image": 0.001, "audio": 0.003} (the `--mslr-lrs` flag)."""
    rates = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--mslr-lrs expects MODALITY=RATE pairs like image=0.001, got {item!r}") from None
    return rates


RATES = Hyperparameter("mslr_lrs", {}, "best unimodal rate per modality, M=LR,... e.g. image=0.001,audio=0.003 "
                       "(compare searches if empty)", valid=lambda v: all(r > 0 for r in v.values()),
                       rule="> 0 for every modality", parse=parse_rates)
SMOOTHING = Hyperparameter("mslr_lambda", 0.5, "MSLR-S smoothing λ in [0, 1]", valid=lambda v: 0 <= v <= 1,
                           rule="in [0, 1]", search=SearchRange(0.0, 1.0, source="ours (its whole domain)"))
INIT = Hyperparameter("mslr_init", "scratch", "where the encoders start: scratch (default: the MILES paper's "
                      "comparison) | unimodal (the MSLR paper: each encoder and head from its unimodal model's "
                      "selected epoch, trained in <run>/init/)", choices=("scratch", "unimodal"))
WINDOW = Hyperparameter("mslr_window", 5, "MSLR-D window w (epochs, ≥ 2)", valid=lambda v: v >= 2,
                        rule="≥ 2 epochs", search=SearchRange(2, 10, source="ours, around the paper's w ≈ 5"))


class MSLR(Method):
    """Modality-specific learning rates, late-fusion setting with trained unimodal heads (Eq. 3); the
    fusion head keeps the global rate, each encoder (with its head) gets its own.
    - `mslr-k` ("keep"): each encoder at its unimodal model's best rate (`mslr_lrs`, e.g. found by
      `milesbook compare`'s unimodal search);
    - `mslr-s` ("smooth"): rates moved towards their mean by λ = `mslr_lambda` (the paper's exact
      smoothing is not public: this linear form is our reading);
    - `mslr-d` ("dynamic"): starting from `mslr_lrs` (or the global rate when none are given), every
      `mslr_window` epochs each encoder's rate is multiplied by its head's current validation
      metric (accuracy; micro-F1 on multi-label data) over the mean of the last `mslr_window` ones
      (`mslr_dynamic_factor`)."""
    trains_heads = True
    modality_source = "heads"

    variant = ""

    def needs(self) -> dict[str, str]:
        if self.config.mslr_init == "unimodal":
            return {"reference_weights": "--mslr-init unimodal starts each encoder from a unimodal run milesbook "
                                         "trains first (--mslr-init scratch works in any loop)"}
        return {}

    def setup(self, context) -> None:
        super().setup(context)
        modalities = list(self.context.modalities)
        given = dict(self.config.mslr_lrs)
        if given and sorted(given) != sorted(modalities):
            raise UserError(f"--mslr-lrs must give a rate for each of {modalities}, got {sorted(given)}")
        if not given and self.variant in ("k", "s"):
            raise UserError(f"{self.name} needs each modality's best unimodal learning rate: --mslr-lrs "
                            f"{','.join(f'{m}=0.001' for m in modalities)} (milesbook compare finds them "
                            "with a small unimodal search)")
        rates = given or {m: self.config.lr for m in modalities}
        if self.variant == "s":
            rates = mslr_smoothed_rates(rates, self.config.mslr_lambda)
        if self.config.mslr_init == "unimodal":
            self._start_from_unimodal(given or {m: self.config.lr for m in modalities})
        for m, lr in rates.items():
            self.group(m)["lr"] = lr
        self.metric_history = {m: [] for m in modalities}

    def _start_from_unimodal(self, unimodal_lrs: dict[str, float]) -> None:
        """Start each encoder, and its unimodal head, from its unimodal run's selected epoch (trained
        at that modality's unimodal rate, with this run's seed, epochs and settings, never reading
        test). With concat fusion the fusion head starts as the sum of the unimodal heads
        ([W_A | W_B], b_A + b_B): at step 0 the model is the paper's additive late fusion of its
        unimodal models. Sum fusion cannot express that sum, so its fusion head starts fresh."""
        weights = {}
        for m, lr in unimodal_lrs.items():
            config = replace(self.config, method=unimodal_name(m), lr=lr, test_split=False)
            weights[m] = self.context.reference_weights(config, f"init/{unimodal_name(m)}")
            prefix = f"encoders.{m}."
            self.model.encoders[m].load_state_dict(
                {k.removeprefix(prefix): v for k, v in weights[m].items() if k.startswith(prefix)})
            # The unimodal model's only trained head is its fusion head (see `Unimodal`).
            self.model.heads[m].load_state_dict({"weight": weights[m]["fusion_head.weight"],
                                                 "bias": weights[m]["fusion_head.bias"]})
        if self.model.fusion_kind == "concat":
            order = self.context.modalities
            with torch.no_grad():
                self.model.fusion_head.weight.copy_(torch.cat([weights[m]["fusion_head.weight"] for m in order], 1))
                self.model.fusion_head.bias.copy_(sum(weights[m]["fusion_head.bias"] for m in order))

    def end_epoch(self, metrics: EpochMetrics) -> None:
        if self.variant != "d":
            return
        for m, values in self.metric_history.items():
            values.append(metrics.validation[m])
            if metrics.epoch % self.config.mslr_window == 0:
                self.group(m)["lr"] *= mslr_dynamic_factor(values, self.config.mslr_window)

    def state_dict(self) -> dict:
        return {"metric_history": self.metric_history}

    def load_state_dict(self, state: dict) -> None:
        self.metric_history = {m: list(v) for m, v in state["metric_history"].items()}


@register
class MSLRKeep(MSLR):
    __doc__ = MSLR.__doc__
    name, variant, hyperparameters = "mslr-k", "k", (RATES, INIT)
    description = ("Eq. 3 with each encoder at its own learning rate, the best one its modality reaches alone, kept "
                   "fixed")
    papers = ("yao2022mslr",)


@register
class MSLRSmooth(MSLR):
    __doc__ = MSLR.__doc__
    name, variant, hyperparameters = "mslr-s", "s", (RATES, SMOOTHING, INIT)
    description = "like mslr-k, with the encoders' rates smoothed towards each other by a factor"
    papers = ("yao2022mslr",)


@register
class MSLRDynamic(MSLR):
    __doc__ = MSLR.__doc__
    name, variant, hyperparameters = "mslr-d", "d", (RATES, WINDOW, INIT)
    description = ("like mslr-k, with each encoder's rate rescaled every few epochs by how its head's validation score "
                   "moves")
    papers = ("yao2022mslr",)
