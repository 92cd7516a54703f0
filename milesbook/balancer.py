"""Balancing in your own training loop: MILES or any method whose rule is a loss, a gradient edit, a
learning-rate rule or early stopping, around the loop you already have.

    balancer = milesbook.Balancer(model, optimizer, method="miles", tau=0.2, mu=0.5)
    for epoch in range(epochs):
        for inputs, labels in train_loader:
            loss = balancer.loss(model(inputs), labels)   # the method's loss (Eq. 3 for MILES)
            optimizer.zero_grad(); loss.backward()
            balancer.after_backward(); optimizer.step(); balancer.after_step()
        balancer.end_epoch(val_loader)                     # readings, then the method's rule (rates for next epoch)
        if balancer.should_stop: break

The model follows the contract (`milesbook.readings.check_output`): forward({modality: batch}) returns
a `FusionOutput`. The optimizer's param groups are named "fusion" and one per modality (what
`JointFusionModel.param_groups(lr)` gives). Methods that need more than a loop gives — G-Blend trains
each branch alone between its estimations — refuse in one line (`milesbook.methods.context`).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch

from . import readings
from .config import TrainConfig
from .errors import UserError
from .methods import EpochMetrics, build_method, hyperparameters_of, unimodal_modality
from .methods.context import RunContext, check_needs
from .metrics import task_of


class LoopContext(RunContext):
    """The run as a method sees it in your own loop: the model, optimizer and task, and — when you pass
    `train_loader` — the training split's size, its batches per epoch and a sample of its rows."""

    where = "your own loop"

    def __init__(self, *args, train_loader: Iterable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_loader = train_loader
        self.provides = frozenset({"training_sample", "batches_per_epoch"} if train_loader is not None else ())

    @property
    def train_size(self) -> int:
        if self.train_loader is None:
            self._lacks("train_size")
        return len(self.train_loader.dataset)

    def batches_per_epoch(self) -> int:
        if self.train_loader is None:
            self._lacks("batches_per_epoch")
        return len(self.train_loader)

    def training_sample(self, count, generator, batch_size=None) -> Iterator[tuple[dict, torch.Tensor]]:
        """Your loader's next batches up to `count` rows (its own shuffling stands for `generator`)."""
        if self.train_loader is None:
            self._lacks("training_sample")
        taken, inputs, labels = 0, [], []
        for x, y in self.train_loader:
            keep = min(len(y), count - taken)
            inputs.append({m: v[:keep].to(self.device) for m, v in x.items()})
            labels.append(y[:keep].to(self.device))
            taken += keep
            if taken >= count:
                break
        whole = ({m: torch.cat([x[m] for x in inputs]) for m in inputs[0]}, torch.cat(labels))
        size = batch_size or taken
        for start in range(0, taken, size):
            yield {m: v[start:start + size] for m, v in whole[0].items()}, whole[1][start:start + size]


def group_rates(optimizer) -> dict[str, float]:
    """{group name: learning rate} of an optimizer with named param groups."""
    return {str(g.get("name", i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}  # a tensor lr too


def method_config(method: str, seed: int = 0, batch_size: int = 64, lr: float = 1e-3, **knobs) -> TrainConfig:
    """The `TrainConfig` a method reads its knobs from, outside milesbook's Trainer: `knobs` must be
    the method's own (`milesbook.methods.hyperparameters_of`), checked as the CLI checks them."""
    if unimodal_modality(method):
        raise UserError(f"{method} trains one modality alone; there is nothing to balance in your own loop")
    own = {knob.name for knob in hyperparameters_of(method)}
    stray = sorted(k for k in knobs if k not in own)  # the rates and the rest are your loop's
    if stray:
        raise UserError(f"{method} has no knob {', '.join(map(repr, stray))}; its knobs are "
                        f"{', '.join(sorted(own)) or 'none'}")
    return TrainConfig(method=method, seed=seed, batch_size=batch_size, lr=lr, **knobs).check()


class Balancer:
    """A balancing method around your own loop (see the module docstring).

    `method`: any of `milesbook.methods.METHODS` but G-Blend ("miles", "aux", "ogm-ge", "mses", …);
    `knobs`: its knobs (tau=, mu= for MILES). `task`: "multiclass" or "multilabel". `train_loader`:
    your training loader, for methods that sample the training split (PMR, AIM-R) or count its batches
    (MLA). `num_classes`: when the model has no `fusion_head` to read it from. `epochs`: how many epochs
    your loop trains, for a rule timed by the run's length (AUG checks for a new head every tenth).

    After `end_epoch`, `history` holds one row per epoch — "epoch", "lr_<group>" (the rate each group
    trained with), "val_<metric>_fusion", "val_<metric>_<m>", "u_<m>", "delta" and the method's own
    columns — and `last_readings` the validation `Readings`."""

    def __init__(self, model, optimizer, method: str = "miles", *, task: str = "multiclass",
                 train_loader: Iterable | None = None, num_classes: int | None = None,
                 modalities: Iterable[str] | None = None, seed: int = 0, where: str | None = None,
                 epochs: int | None = None, **knobs):
        self.model, self.optimizer, self.task = model, optimizer, task_of(task)
        names = [g.get("name") for g in optimizer.param_groups]
        if "fusion" not in names or None in names:
            raise UserError(f"balancing needs the optimizer's param groups named 'fusion' and one per modality "
                            f"(JointFusionModel.param_groups(lr) gives them); they are named {names}")
        own_order = getattr(model, "modalities", None)  # a JointFusionModel's: its fusion head's column order
        self.modalities = tuple(modalities or own_order or [n for n in names if n != "fusion"])
        if own_order is not None and tuple(own_order) != self.modalities:
            raise UserError(f"modalities={list(self.modalities)} differ from the model's own {list(own_order)}; "
                            "leave modalities= out")
        lacking = [m for m in self.modalities if m not in names]
        if lacking:
            raise UserError(f"the optimizer has no param group named {lacking}; balancing needs one per modality "
                            f"(its groups are named {names})")
        if num_classes is None:
            head = getattr(model, "fusion_head", None)
            num_classes = getattr(head, "out_features", None)
        if num_classes is None:
            raise UserError("pass num_classes= (the model has no fusion_head to read it from)")
        batch_size = getattr(train_loader, "batch_size", None) or 64
        # a method that sets rates from the config's global one (MSLR without --mslr-lrs) starts from yours
        self.config = method_config(method, seed=seed, batch_size=batch_size, lr=group_rates(optimizer)["fusion"],
                                    **knobs)
        self.method = build_method(self.config, self.modalities)
        parameter = next(iter(model.parameters()), None)
        if parameter is None:
            raise UserError(f"{type(model).__name__} has no parameters to balance")
        device = parameter.device
        self.context = LoopContext(model, optimizer, self.task, self.modalities, num_classes, device, seed,
                                   batch_size, epochs=epochs, train_loader=train_loader)
        if where:
            self.context.where = where
        check_needs(self.method, self.context)
        self.method.setup(self.context)
        self.epoch = 1              # the epoch being trained (1-based, as history.csv)
        self._open = False          # has this epoch's first batch been seen?
        # Before the epoch's first forward, as in the Trainer (AIM-R's and PMR's prototypes use the model).
        self.method.start_epoch(self.epoch)
        self._batch = None          # (out, labels) of the batch between `loss` and `after_backward`
        self._checked = False
        self.rates: dict[str, float] = {}
        self.history: list[dict] = []
        self.last_readings: readings.Readings | None = None

    # -- per batch ---------------------------------------------------------------------------------
    def _start_epoch(self) -> None:
        if not self._open:
            self.rates = group_rates(self.optimizer)  # what this epoch trains with (read at its first batch)
            self._open = True

    def readout(self, out):
        """The method's prediction from the model's output (MLA fuses its own way; the rest: as is)."""
        return self.method.readout(out)

    def loss(self, out, labels: torch.Tensor) -> torch.Tensor:
        """The method's training loss of one batch, from the model's `FusionOutput` and the labels."""
        self._start_epoch()
        if not self._checked:
            readings.check_output(out, self.modalities, self.method.modality_source)
            self._checked = True
        out = self.method.readout(out)
        self._batch = (out, labels)
        return self.method.loss(out, labels, self.task.loss)

    def after_backward(self) -> None:
        """After `loss.backward()`, before `optimizer.step()`: the method's gradient edit, if any."""
        if self._batch is None:
            raise UserError("call balancer.loss(out, labels) before balancer.after_backward()")
        self.method.after_backward(*self._batch, self.epoch)

    def after_step(self) -> None:
        """Right after `optimizer.step()`."""
        self.method.after_step(self.epoch)
        self._batch = None

    # -- per epoch ---------------------------------------------------------------------------------
    def end_epoch(self, val_loader: Iterable) -> readings.Readings:
        """Read the model on `val_loader`'s split (((inputs, labels) batches), apply the method's rule
        for the next epoch (MILES: Algorithm 1 on the rates), and return the validation `Readings`."""
        self._start_epoch()  # an epoch with no batch still counts
        found = self.read(val_loader)
        metric = found.metric
        row = {"epoch": self.epoch, **{f"lr_{k}": v for k, v in self.rates.items()},
               f"val_{metric}_fusion": found.values[f"{metric}_fusion"],
               **{f"val_{metric}_{m}": found.metrics[m] for m in self.modalities},
               **{f"u_{m}": u for m, u in found.utilization.items()}, "delta": found.delta}
        validation = {k: v for k, v in found.metrics.items() if not k.startswith("without_")}
        self.method.end_epoch(EpochMetrics(self.epoch, found.metrics, row, metric, validation))
        self.history.append(row)
        self.last_readings = found
        self.epoch += 1
        self._open = False
        if not self.should_stop:
            self.method.start_epoch(self.epoch)
        return found

    def read(self, loader: Iterable) -> readings.Readings:
        """The model's `Readings` on a loader's split, through the method's reading and readout."""
        return readings.read(self.model, loader, task=self.task.name, reading=self.method.modality_source,
                             num_classes=self.context.num_classes, modalities=self.modalities,
                             readout=self.method.readout)

    @property
    def should_stop(self) -> bool:
        """True once the method has finished training early (MSES)."""
        return bool(self.method.should_stop())

    def state_dict(self) -> dict:
        """The method's state and the epoch count (the model and optimizer save their own)."""
        return {"epoch": self.epoch, "method": self.method.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        """Put back a `state_dict()` — after the model's and optimizer's own, so that the epoch about to
        train starts from them (InfoReg anchors on the weights; PMR and AIM-R count epochs)."""
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.method.load_state_dict(state["method"])
        self.method.start_epoch(self.epoch)
