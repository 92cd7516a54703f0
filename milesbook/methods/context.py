"""What a method sees of the run it balances: a narrow context, never the loop that trains.

Three loops build one — milesbook's `Trainer` (`milesbook.train`), the own-loop `Balancer`
(`milesbook.balancer`) and the Lightning callback (`milesbook.lightning`) — and every method
(`Method.setup(context)`) works through it alone. What every context has: the model, its optimizer
(param groups named "fusion" and one per modality), the task, the modalities, the number of classes,
the device, the run's seed and batch size. What some lack, a method declares in `Method.needs`, and a
loop that cannot give it refuses the method in one line before anything trains:

- `training_sample`: rows drawn at random from the training split (PMR's and AIM-R's prototypes);
- `batches_per_epoch`: how many batches an epoch has (MLA's projection schedule);
- `evaluate`, `hold_out`, `train_pass`: scoring a split, carving a hold-out from train, and a whole
  training pass with a given loss (G-Blend trains each branch alone between its estimations);
- `reference_weights`: a finished run this one starts from (MSLR's unimodal initialisation);
- `training_rows`: the model's outputs on every training row, and epochs made of passes over chosen
  rows (`Method.training_passes`: Data Remixing assigns each row to one modality).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..errors import UserError

CAPABILITIES = ("training_sample", "batches_per_epoch", "evaluate", "hold_out", "train_pass", "reference_weights",
                "training_rows")


class RunContext:
    """The run as a method sees it. Subclasses give the capabilities in `provides`; asking for one
    that is not there is a `UserError` naming the loop."""

    where = "this loop"          # how a refusal names the loop: "your own loop", "Lightning"
    provides: frozenset = frozenset()

    def __init__(self, model, optimizer, task, modalities, num_classes: int, device, seed: int, batch_size: int,
                 data_name: str = "your data", epochs: int | None = None):
        self.model, self.optimizer, self.task = model, optimizer, task
        self.modalities = tuple(modalities)
        self.num_classes, self.device = num_classes, torch.device(device)
        self.seed, self.batch_size, self.data_name = seed, batch_size, data_name
        self.epochs = epochs  # the run's planned epochs, when the loop knows them (None: it does not)

    def group(self, name: str) -> dict:
        """The optimizer's param group called `name` ("fusion" or a modality)."""
        return next(g for g in self.optimizer.param_groups if g.get("name") == name)

    def _lacks(self, capability: str):
        raise UserError(f"{capability} is not available in {self.where}")

    # -- capabilities some loops lack --------------------------------------------------------------
    @property
    def train_size(self) -> int:
        """Samples in the training split."""
        self._lacks("train_size")

    def batches_per_epoch(self) -> int:
        """Optimizer steps in one training epoch."""
        self._lacks("batches_per_epoch")

    def training_sample(self, count: int, generator: torch.Generator,
                        batch_size: int | None = None) -> Iterator[tuple[dict, torch.Tensor]]:
        """About `count` training rows drawn at random with `generator`, as the encoders take them and
        with the training noise, in batches of `batch_size` (None: one batch): (inputs, labels) each."""
        self._lacks("training_sample")

    def evaluate(self, split: str, noise: torch.Generator | None = None) -> dict[str, float]:
        """Mean losses ("loss_fusion", "loss_head_<m>") and metrics of the model on a whole split."""
        self._lacks("evaluate")

    def hold_out(self, name: str, fraction: float, seed: int) -> None:
        """Move a seeded `fraction` of the training split into a new split called `name`."""
        self._lacks("hold_out")

    def train_pass(self, epoch: int, loss_fn: Callable) -> None:
        """One pass over the training split with `loss_fn(out, labels)` as the whole loss (no method hook)."""
        self._lacks("train_pass")

    def reference_weights(self, config, name: str) -> dict:
        """The selected weights of the run `config` trained (or reused) in this run's `name` subfolder."""
        self._lacks("reference_weights")

    def training_outputs(self):
        """The method's `FusionOutput` (without features) on every training row in row order, in eval
        mode, without gradient and without training noise: each logit tensor (n_train, classes)."""
        self._lacks("training_rows")


def check_needs(method, context: RunContext) -> None:
    """One line, before anything trains, when `method` needs what `context` cannot give, or model parts
    (`Method.model_parts`) the model does not have."""
    absent = [part for part in method.model_parts if not hasattr(context.model, part)]
    if absent:
        raise UserError(f"{method.name} works on the model's {', '.join(absent)} (as milesbook.JointFusionModel "
                        f"has them), which {type(context.model).__name__} does not have; wrap your encoders in "
                        "JointFusionModel or pick a method without that need (docs/own-loop.md)")
    missing = {need: why for need, why in method.needs().items() if need not in context.provides}
    if missing:
        need, why = next(iter(missing.items()))
        raise UserError(f"{method.name} cannot run in {context.where}: {why} ({need}); "
                        f"train it with milesbook's Trainer (milesbook train --method {method.name})")
