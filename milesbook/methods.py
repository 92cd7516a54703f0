"""Training methods as small hooks on the one trainer (`milesbook.train`).

A method decides these things and nothing else:
- which losses train the model (`loss`): L_AB only, or Eq. 3's L_AB + Σ_m L_m, or weighted;
- which per-modality logits stand for "modality m's prediction" (`modality_source`): the trained
  unimodal heads ("heads") or the fusion head's per-modality parts ("parts");
- its starting rates and data (`setup`), work before an epoch (`start_epoch`, e.g. G-Blend's weight
  estimation), what happens between `backward()` and `optimizer.step()` (`after_backward`, e.g.
  gradient modulation), after each epoch's validation (`end_epoch`, e.g. learning-rate rules), and
  whether training is over early (`should_stop`, e.g. modality-specific early stopping).

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
    ({"fusion": M_AB, modality: M_m} on the utilization split), the whole history row, and the name
    of the headline metric M in its columns ("acc", or "f1micro" on multi-label data)."""
    epoch: int
    utilization_metrics: dict[str, float]
    row: dict[str, float]
    metric: str = "acc"


class Method:
    """The plain recipe every other method modifies: L_AB only, modality logits from fusion parts."""

    name = "vanilla"
    trains_heads = False       # do the unimodal heads' losses reach the encoders (Eq. 3)?
    modality_source = "parts"  # "parts" (fusion head's share) or "heads" (unimodal heads)

    def __init__(self, config):
        self.config = config

    def setup(self, trainer) -> None:
        """Called once the trainer's model, optimizer and data exist (before a resume restores their
        state). Methods keep what they need: `trainer.model`, `trainer.optimizer`, `trainer.splits`."""
        self.trainer, self.model, self.optimizer = trainer, trainer.model, trainer.optimizer

    def group(self, name: str) -> dict:
        """The optimizer's param group called `name` ("fusion" or a modality)."""
        return next(g for g in self.optimizer.param_groups if g["name"] == name)

    def start_epoch(self, epoch: int) -> None:
        """Before the epoch's training pass."""

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        """The training loss of one batch from the model's `FusionOutput`."""
        if self.trains_heads:
            return loss_fn(out.fusion, labels) + sum(loss_fn(h, labels) for h in out.heads.values())
        return loss_fn(out.fusion, labels)

    def after_backward(self, out, labels, epoch: int) -> None:
        """Between backward and optimizer step: gradients may be changed here."""

    def end_epoch(self, metrics: EpochMetrics) -> None:
        """After validation: set the rates (or anything else) for the next epoch. Columns added to
        `metrics.row` are written to history.csv."""

    def should_stop(self) -> bool:
        """True once the method has finished training early."""
        return False

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

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.scheduler = MILES(self.optimizer, tau=self.config.tau, mu=self.config.mu,
                               modalities=list(self.model.modalities))

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

    def require(ok: bool, flag: str, rule: str, value) -> None:
        if not ok:
            raise UserError(f"{flag} must be {rule}, got {value}")

    require(config.lr > 0, "--lr", "> 0", config.lr)
    require(config.ogm_alpha > 0, "--ogm-alpha", "> 0 (the OGM paper uses 0.1–1.0)", config.ogm_alpha)
    require(1 <= config.ogm_start <= config.ogm_end, "--ogm-start/--ogm-end", "1 ≤ start ≤ end",
            (config.ogm_start, config.ogm_end))
    check_choice("--ogm-params value", config.ogm_params, ["weights", "conv"])
    check_choice("--ogm-source value", config.ogm_source, ["parts", "heads"])
    check_choice("--gblend-mode value", config.gblend_mode, ["online", "offline"])
    require(config.gblend_every >= 1, "--gblend-every", "≥ 1 epoch", config.gblend_every)
    require(config.gblend_epochs >= 1, "--gblend-epochs", "≥ 1", config.gblend_epochs)
    require(0 < config.gblend_holdout < 0.5, "--gblend-holdout", "in (0, 0.5) (a fraction of the training split)",
            config.gblend_holdout)
    require(all(v > 0 for v in config.mslr_lrs.values()), "--mslr-lrs", "> 0 for every modality", config.mslr_lrs)
    require(0 <= config.mslr_lambda <= 1, "--mslr-lambda", "in [0, 1]", config.mslr_lambda)
    require(config.mslr_window >= 2, "--mslr-window", "≥ 2 epochs", config.mslr_window)
    require(config.mses_patience >= 1, "--mses-patience", "≥ 1 epoch (the MSES paper uses 3–10)",
            config.mses_patience)


from . import baselines  # noqa: E402,F401  (registers the baselines in METHODS)
