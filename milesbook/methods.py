"""Training methods as small hooks on the one trainer (`milesbook.train`).

A method decides four things and nothing else:
- which losses train the model (`loss`): L_AB only, or Eq. 3's L_AB + Σ_m L_m, or weighted;
- which per-modality logits stand for "modality m's prediction" (`modality_source`): the trained
  unimodal heads ("heads") or the fusion head's per-modality parts ("parts");
- what happens between `backward()` and `optimizer.step()` (`after_backward`, e.g. gradient
  modulation);
- what happens after each epoch's validation (`end_epoch`, e.g. learning-rate rules).

Which loss belongs to which method follows the reference: `vanilla` trains L_AB only and reads
modality accuracies from the fusion head's parts; `aux` and `miles` train Eq. 3 and read the trained
heads; `aux` is `miles` without the scheduler, so `miles − aux` isolates the scheduling effect.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UserError, check_choice
from .miles import MILES


@dataclass
class EpochMetrics:
    """What `end_epoch` sees: the epoch number (1-based), the utilization metrics MILES reads
    ({"fusion": M_AB, modality: M_m} on the utilization split) and the whole history row."""
    epoch: int
    utilization_metrics: dict[str, float]
    row: dict[str, float]


class Method:
    """The plain recipe every other method modifies: L_AB only, modality logits from fusion parts."""

    name = "vanilla"
    trains_heads = False       # do the unimodal heads' losses reach the encoders (Eq. 3)?
    modality_source = "parts"  # "parts" (fusion head's share) or "heads" (unimodal heads)

    def __init__(self, config):
        self.config = config

    def setup(self, model, optimizer) -> None:
        """Called once the model and optimizer exist (before any resume restores their state)."""
        self.model, self.optimizer = model, optimizer

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        """The training loss of one batch from the model's `FusionOutput`."""
        if self.trains_heads:
            return loss_fn(out.fusion, labels) + sum(loss_fn(h, labels) for h in out.heads.values())
        return loss_fn(out.fusion, labels)

    def after_backward(self, out, labels, epoch: int) -> None:
        """Between backward and optimizer step: gradients may be changed here."""

    def end_epoch(self, metrics: EpochMetrics) -> None:
        """After validation: set the rates (or anything else) for the next epoch."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Vanilla(Method):
    """Joint fusion trained on the multimodal loss L_AB only (the paper's baseline network).
    Modality accuracies come from the fusion head's parts W_m z_m + b/M."""


class Aux(Method):
    """Eq. 3 — L_AB + L_A + L_B with trained unimodal heads — at one global rate, no scheduling.
    MILES with μ = 1; the row that separates the auxiliary losses' effect from the scheduler's."""
    name = "aux"
    trains_heads = True
    modality_source = "heads"


class Miles(Aux):
    """Eq. 3 plus the MILES scheduler (Algorithm 1) after every validation."""
    name = "miles"

    def setup(self, model, optimizer) -> None:
        super().setup(model, optimizer)
        self.scheduler = MILES(optimizer, tau=self.config.tau, mu=self.config.mu,
                               modalities=list(model.modalities))

    def end_epoch(self, metrics: EpochMetrics) -> None:
        self.scheduler.step(metrics.utilization_metrics)

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


class Unimodal(Method):
    """One encoder and its linear head trained alone (the paper's Table I reference). The model is
    built with that modality only; its fusion head is the unimodal head."""
    name = "unimodal"


METHODS: dict[str, type[Method]] = {"vanilla": Vanilla, "aux": Aux, "miles": Miles}


def method_names(modalities) -> list[str]:
    """Valid `--method` values for a dataset with these modalities."""
    return list(METHODS) + [f"unimodal-{m}" for m in modalities]


def unimodal_modality(method: str) -> str | None:
    """"audio" for "unimodal-audio"; None for a multimodal method."""
    return method.removeprefix("unimodal-") if method.startswith("unimodal-") else None


def build_method(config, modalities) -> Method:
    name = check_choice("method", config.method, method_names(modalities))
    if unimodal_modality(name):
        return Unimodal(config)
    return METHODS[name](config)


def check_method_options(config) -> None:
    """Range checks on every method hyper-parameter in the config, with messages naming the flag."""
    from .miles import check_hyperparameters
    check_hyperparameters(config.tau, config.mu)
    if config.lr <= 0:
        raise UserError(f"--lr must be > 0, got {config.lr}")
