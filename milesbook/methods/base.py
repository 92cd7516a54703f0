"""What every method is built from: the hooks every training loop calls (milesbook's Trainer and yours), the
declaration of a method's knobs, the registry, and the three plain recipes (`vanilla`, `aux`, the
unimodal references). Imports no method: each method module registers itself here, and
`milesbook.methods` imports them all.

A method sees the run only through a narrow `RunContext` (`milesbook.methods.context`): the model,
its named param groups, the task and what the loop can give besides (`needs`). So the same method runs
in milesbook's Trainer, in your own loop (`milesbook.Balancer`) and under Lightning.

A method decides these things and nothing else:
- which losses train the model (`loss`): L_AB only, or Eq. 3's L_AB + Σ_m L_m, or weighted;
- which per-modality logits stand for "modality m's prediction" (`modality_source`): the trained
  unimodal heads ("heads") or the fusion head's per-modality parts ("parts");
- how it predicts (`readout`, described by `inference`): the fusion head, or its own rule (MLA fuses
  a shared head's per-modality logits at test time);
- its starting rates and data (`setup`), work before an epoch (`start_epoch`, e.g. G-Blend's weight
  estimation), which training rows an epoch passes over (`training_passes`, e.g. Data Remixing's
  per-sample subsets; by default every row once), what happens between `backward()` and `optimizer.step()` (`after_backward`, e.g.
  gradient modulation), after `optimizer.step()` (`after_step`), after each epoch's validation (`end_epoch`, e.g. learning-rate rules), and
  whether training is over early (`should_stop`, e.g. modality-specific early stopping).

Which loss belongs to which method follows the reference: `vanilla` trains L_AB only and reads
modality accuracies from the fusion head's parts; `aux` and `miles` train Eq. 3 and read the trained
heads; `aux` is `miles` without the scheduler, so `miles − aux` isolates the scheduling effect.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import UserError, check_choice


# -- a method's knobs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchRange:
    """Where a hyper-parameter search draws a knob from: [low, high] (log-uniformly if `log`; integers
    if both ends are ints), or one of `choices`; `source` says where the range comes from."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    source: str = ""


@dataclass(frozen=True)
class Hyperparameter:
    """One knob of a method, declared once beside the method. Everything else derives from it: the
    `TrainConfig` attribute `name`, the CLI flag (`--ogm-alpha` for "ogm_alpha"; `--no-<name>` for a
    switch that is on by default), the range check, the run cache's key (a knob only changes the runs
    of the methods that declare it) and the search space."""
    name: str
    default: Any
    help: str
    valid: Callable[[Any], bool] | None = None  # the valid domain; None accepts any value of the type
    rule: str = ""                              # `valid` in words, for the error message: "> 0"
    choices: tuple = ()                         # the valid values of a categorical knob
    search: SearchRange | None = None           # None: not searched (set by hand)
    parse: Callable[[str], Any] | None = None   # command-line text → value, for dict-valued knobs

    @property
    def flag(self) -> str:
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.default is True else f"--{dashed}"

    def check(self, value) -> None:
        """Raise a UserError naming the flag unless `value` is valid."""
        if self.choices:
            check_choice(f"{self.flag} value", value, self.choices)
        elif self.valid is not None and not self.valid(value):
            raise UserError(f"{self.flag} must be {self.rule}, got {value}")


@dataclass
class TrainingPass:
    """One pass of an epoch over chosen training rows: `rows` (LongTensor of indices into the training
    split; the loop shuffles them), the `loss(out, labels, loss_fn)` of its batches, and the modalities
    whose inputs are `zeroed` (a zero tensor in place of the normalized input) in this pass."""
    rows: torch.Tensor
    loss: Callable
    zeroed: tuple[str, ...] = ()


@dataclass
class EpochMetrics:
    """What `end_epoch` sees: the epoch number (1-based), the utilization metrics MILES reads
    ({"fusion": M_AB, modality: M_m} on the utilization split), the validation metrics
    ({"fusion": M_AB, modality: M_m} on validation, in the method's reading), the epoch's row (columns
    a method adds are written to history.csv, or printed by your loop), and the name of the headline
    metric M ("acc", or "f1micro" on multi-label data)."""
    epoch: int
    utilization_metrics: dict[str, float]
    row: dict[str, float]
    metric: str = "acc"
    validation: dict[str, float] = field(default_factory=dict)


class Method:
    """The plain recipe every other method modifies: L_AB only, modality logits from fusion parts."""

    name = "vanilla"
    # One line for the book's methods appendix, and the keys in milesbook/references.bib of its papers.
    description = ("joint training on the fused prediction's loss L_AB alone, each modality read from its part of the "
                   "fusion head")
    papers: tuple[str, ...] = ("miles2025",)
    hyperparameters: tuple[Hyperparameter, ...] = ()  # the method's knobs (see `Hyperparameter`)
    trains_heads = False       # do the unimodal heads' losses reach the encoders (Eq. 3)?
    modality_source = "parts"  # "parts" (fusion head's share) or "heads" (unimodal heads)
    inference = "fusion head"  # how the method predicts (`readout`), recorded in summary.json
    max_modalities: int | None = None  # e.g. 2 for a rule that compares a pair; "all" leaves it out beyond
    report_note = ""  # said beside the method's name in every report table, e.g. "reconstruction"
    # What the method works on beyond the model contract (a forward returning FusionOutput), e.g.
    # "encoders" ({modality: nn.Module}) for a gradient rule: `milesbook.JointFusionModel` has them all.
    model_parts: tuple[str, ...] = ()
    steps_in_loss = False  # does `loss` step the optimizer itself (MLA's sub-steps)?

    def __init__(self, config):
        self.config = config

    @classmethod
    def check_options(cls, config) -> None:
        """The method's own checks of its knobs, e.g. one that involves several of them (each knob's
        declared domain is checked after these)."""

    def needs(self) -> dict[str, str]:
        """{capability: why} for what this method needs beyond the model, optimizer and task
        (`milesbook.methods.context.CAPABILITIES`); a loop that cannot give one refuses the method."""
        return {}

    def setup(self, context) -> None:
        """Called once the run's model and optimizer exist (before a resume restores their state), with
        the `RunContext` the method works through: `context.model`, `context.optimizer`, `context.task`…"""
        self.context, self.model, self.optimizer = context, context.model, context.optimizer

    def group(self, name: str) -> dict:
        """The optimizer's param group called `name` ("fusion" or a modality)."""
        return self.context.group(name)

    def start_epoch(self, epoch: int) -> None:
        """Before the epoch's training pass."""

    def training_passes(self, epoch: int) -> list[TrainingPass] | None:
        """The epoch's training passes, in order, when the method chooses which rows train with which
        loss (Data Remixing); None, the default: one pass over every training row with `loss`. Called
        after `start_epoch`; only milesbook's Trainer runs them (`needs` "training_rows")."""
        return None

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        """The training loss of one batch from the model's `FusionOutput`."""
        if self.trains_heads:
            return loss_fn(out.fusion, labels) + sum(loss_fn(h, labels) for h in out.heads.values())
        return loss_fn(out.fusion, labels)

    def readout(self, out):
        """The `FusionOutput` the method predicts and is scored with, from the model's: by default the
        model's own (fusion head; unimodal heads; fusion parts). Used in training and evaluation."""
        return out

    def after_backward(self, out, labels, epoch: int) -> None:
        """Between backward and optimizer step: gradients may be changed here."""

    def after_step(self, epoch: int) -> None:
        """Right after `optimizer.step()` (e.g. to measure how far each parameter moved)."""

    def clip_gradients(self, max_norm: float) -> None:
        """Scale the gradients of the parameters the method trains so their global norm is at most
        `max_norm` (as `torch.nn.utils.clip_grad_norm_`); the detached probes of a method that does not
        train the unimodal heads are left out, as they are not part of the method's model."""
        probes = set()
        if not self.trains_heads and hasattr(self.model, "heads"):
            probes = {id(p) for p in self.model.heads.parameters()}
        params = [p for g in self.optimizer.param_groups for p in g["params"] if id(p) not in probes]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def end_epoch(self, metrics: EpochMetrics) -> None:
        """After validation: set the rates (or anything else) for the next epoch. Columns added to
        `metrics.row` are written to history.csv."""

    def should_stop(self) -> bool:
        """True once the method has finished training early."""
        return False

    def summary(self) -> dict:
        """The method's own entries in summary.json (e.g. how often one of its guards bound)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def require_single_label(method: str, context, why: str) -> None:
    """One line when the run's data is multi-label and `method`'s rule (`why`: "builds one prototype per
    class") needs one class per sample."""
    if context.task.name == "multilabel":
        raise UserError(f"{method} {why} and needs single-label data; {context.data_name} is multi-label")


# -- the registry ----------------------------------------------------------------------------------

METHODS: dict[str, type[Method]] = {}  # name → class, in registration order


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available as `--method <cls.name>`. Two methods may share a knob
    (the same `Hyperparameter`, e.g. OGM and OGM-GE's α); two different knobs may not share a name, nor
    two methods a name: a second registration would silently replace the first."""
    if cls.name in METHODS:
        first = METHODS[cls.name]
        raise ValueError(f"method {cls.name!r} is registered twice ({first.__module__}.{first.__qualname__} and "
                         f"{cls.__module__}.{cls.__qualname__})")
    for knob in cls.hyperparameters:
        other = all_hyperparameters().get(knob.name)
        if other is not None and other != knob:
            raise ValueError(f"{cls.name}: knob {knob.name!r} is declared differently by another method")
    METHODS[cls.name] = cls
    return cls


def all_hyperparameters() -> dict[str, Hyperparameter]:
    """Every registered method's knobs by name (each once), in registration order."""
    knobs = {}
    for cls in METHODS.values():
        for knob in cls.hyperparameters:
            knobs.setdefault(knob.name, knob)
    return knobs


def hyperparameters_of(method: str) -> tuple[Hyperparameter, ...]:
    """The knobs of `method` ("miles", "ogm", …; none for the unimodal references or unknown names)."""
    cls = METHODS.get(method)
    return cls.hyperparameters if cls else ()


@register
class Vanilla(Method):
    """Joint fusion trained on the multimodal loss L_AB only (the paper's baseline network).
    Modality accuracies come from the fusion head's parts W_m z_m + b/M."""


@register
class Aux(Method):
    """Eq. 3 — L_AB + L_A + L_B with trained unimodal heads — at one global rate, no scheduling.
    MILES with μ = 1; the row that separates the auxiliary losses' effect from the scheduler's."""
    name = "aux"
    description = ("vanilla plus one cross-entropy loss per modality from its own linear head (the MILES paper's Eq. 3),"
                   " at one learning rate: MILES without its scheduling")
    papers = ("miles2025",)
    trains_heads = True
    modality_source = "heads"


class Unimodal(Method):
    """One encoder and its linear head trained alone (the paper's Table I reference). The model is
    built with that modality only; its fusion head is the unimodal head."""
    name = "unimodal"
    description = ("one modality's encoder with its own linear head, trained alone: the reference a modality's accuracy "
                   "inside fusion is read against")
    papers = ("miles2025",)


def method_names(modalities) -> list[str]:
    """Valid `--method` values for a dataset with these modalities."""
    return list(METHODS) + [unimodal_name(m) for m in modalities]


def report_name(method: str) -> str:
    """The method's name as reports print it: with its `report_note`, e.g. "aim-r (reconstruction)"."""
    note = METHODS[method].report_note if method in METHODS else ""
    return f"{method} ({note})" if note else method


UNIMODAL = "unimodal-"  # the prefix of a unimodal reference's method name: read and written only below


def unimodal_modality(method: str) -> str | None:
    """"audio" for "unimodal-audio"; None for a multimodal method."""
    return method.removeprefix(UNIMODAL) if is_unimodal(method) else None


def unimodal_name(modality: str) -> str:
    """"unimodal-audio" for "audio": the method name of a modality's unimodal reference."""
    return UNIMODAL + modality


def is_unimodal(method: str) -> bool:
    """Whether `method` names a unimodal reference ("unimodal-<modality>")."""
    return method.startswith(UNIMODAL)


def build_method(config, modalities) -> Method:
    """The method object `config.method` names, for a dataset with these modalities."""
    name = check_choice("method", config.method, method_names(modalities))
    if unimodal_modality(name):
        return Unimodal(config)
    return METHODS[name](config)


def check_method_options(config) -> None:
    """Range checks on every registered knob's value in `config`: first each method's own checks
    (which may say more, e.g. MILES's come from the scheduler itself), then each knob's declared
    domain, in a message naming its flag."""
    for cls in METHODS.values():
        cls.check_options(config)
    for knob in all_hyperparameters().values():
        knob.check(getattr(config, knob.name))
