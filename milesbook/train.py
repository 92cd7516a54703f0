"""The one training loop. Every method (MILES, the baselines, the references) runs through `train`;
what differs between them lives in `milesbook.methods`, and what a run writes to its folder (and
how it resumes and which epoch it reports) in `milesbook.runs`.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import handed, provenance, readings, runs
from .config import TrainConfig
from .datasets import MultimodalDataset, is_path, load_dataset
from .datasets.registry import take_rows
from .errors import NonFiniteLossError, UserError
from .methods import EpochMetrics, build_method, unimodal_modality
from .methods.context import CAPABILITIES, RunContext
from .metrics import task_of
from .models import FusionOutput, build_model


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available; use --device cpu or auto")
    if name == "cuda":  # cuBLAS's deterministic workspace: read when CUDA starts, so before any CUDA work
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device(name)


class Trainer:
    """Holds one run's data, model, optimizer and method; `fit` trains to `config.epochs`."""

    def __init__(self, config: TrainConfig, out: Path, dataset: MultimodalDataset | None = None,
                 progress: bool = True, conditions: dict | None = None, encoders: dict | None = None):
        self.config = config.check()
        self.out = Path(out)
        self.device = resolve_device(config.device)
        self.progress = progress
        self.data = dataset if dataset is not None else load_dataset(config.dataset, **config.dataset_options)
        self.task = task_of(self.data.task)
        self.metric = self.task.headline  # the M of utilization and selection
        only = unimodal_modality(config.method)
        self.modalities = (only,) if only else self.data.modalities
        self.method = build_method(config, self.data.modalities)
        # Which logits stand for "modality m" in history/summary columns without a suffix.
        self.source = "head" if self.method.modality_source == "heads" else "part"
        self._check_data()
        # Everything that can change the numbers besides the config (`milesbook.provenance`); `conditions`
        # when the caller has just collected it for this data.
        # Your own encoders {modality: nn.Module}, for the modalities this run trains.
        self.encoders = {m: e for m, e in (encoders or {}).items() if m in self.modalities}
        unknown = sorted(set(encoders or {}) - set(self.data.modalities))
        if unknown:
            raise UserError(f"encoders given for {unknown}, which {self.data.name!r} does not have; its modalities "
                            f"are {list(self.data.modalities)}")
        self.provenance = conditions or provenance.collect(self.device, config.threads, self.data, self.encoders)

        torch.manual_seed(config.seed)
        shapes = {m: self.data.shapes[m] for m in self.modalities}
        with provenance.reproducible(config.threads, self.device):
            self.model = build_model(shapes, self.data.num_classes, config.fusion, config.encoder,
                                     config.feature_dim, self.data.encoder_options, self.encoders).to(self.device)
        groups = self.model.param_groups(config.lr)
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), weight_decay=config.weight_decay) \
            if config.optimizer == "adam" else torch.optim.SGD(groups, momentum=0.9, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)  # batch order and training noise
        self.splits = {name: ({m: s.inputs[m].to(self.device) for m in self.modalities}, s.labels.to(self.device))
                       for name, s in self.data.splits.items() if name in self._read_splits()}
        self.method.setup(TrainerContext(self))
        self.history: list[dict] = []       # one row per epoch (history.csv)
        self.test_history: list[dict] = []  # one row per epoch (test_history.csv)

    # -- checks ------------------------------------------------------------------------------------
    def _read_splits(self) -> list[str]:
        """The splits this run touches: all of them, or all but test when `config.test_split` is off."""
        return [name for name in self.data.splits if name != "test" or self.config.test_split]

    def _check_data(self) -> None:
        shapes = self.data.shapes
        for name in self._read_splits():
            split = self.data.splits[name]
            for m in self.data.modalities:
                x = split.inputs.get(m)
                if x is None:
                    raise UserError(f"dataset {self.data.name!r}: split {name!r} has no modality {m!r}")
                if tuple(x.shape[1:]) != shapes[m] or len(x) != len(split.labels):
                    raise UserError(f"dataset {self.data.name!r}: split {name!r}, modality {m!r} has shape "
                                    f"{tuple(x.shape)}; expected ({len(split.labels)}, {', '.join(map(str, shapes[m]))})")
            labels, classes = split.labels, self.data.num_classes
            if self.task.name == "multilabel":
                if labels.shape[1:] != (classes,) or not ((labels == 0) | (labels == 1)).all():
                    raise UserError(f"dataset {self.data.name!r}: split {name!r} needs multi-label targets of "
                                    f"shape (N, {classes}) holding 0/1, got {tuple(labels.shape)}")
            elif labels.dim() != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= classes)):
                raise UserError(f"dataset {self.data.name!r}: split {name!r} needs class ids 0..{classes - 1} "
                                f"of shape (N,), got shape {tuple(labels.shape)}")

    # -- one pass ----------------------------------------------------------------------------------
    def _counts(self, out, labels) -> torch.Tensor:
        """The task's counts of every logit `readings.logit_names` lists, concatenated."""
        return readings.counts(self.task, out, labels, self.modalities, self.method.modality_source,
                               self.data.num_classes)

    def _metrics(self, counts: torch.Tensor, n: int) -> dict[str, float]:
        """{"<metric>_<logit name>": value} from counts summed over a pass of `n` samples."""
        return readings.metrics_from_counts(self.task, counts, n, self.modalities, self.data.num_classes)

    def _input(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """A batch of modality m as the encoder takes it: compact storage made float32 and normalized;
        token ids left as they are."""
        if x.dtype in (torch.uint8, torch.float16, torch.bfloat16):
            x = x.float()
        if m in self.data.normalize:
            mean, std = self.data.normalize[m]
            x = (x - mean) / std
        return x

    def _forward(self, inputs):
        # Heads are linear probes (no gradient into encoders) for methods that do not train them.
        return self.method.readout(self.model(inputs, detach_heads=not self.method.trains_heads))

    def _method_step(self, out, y, epoch: int, loss_of: Callable | None = None) -> torch.Tensor:
        """One optimizer step on the method's loss (or a pass's own, `loss_of`) with its hooks around it;
        returns the loss."""
        loss = (loss_of or self.method.loss)(out, y, self.task.loss)
        probe_loss = 0.0
        if not self.method.trains_heads and self.config.probes:
            probe_loss = sum(self.task.loss(h, y) for h in out.heads.values())
        self.optimizer.zero_grad(set_to_none=True)
        (loss + probe_loss).backward()
        self.method.after_backward(out, y, epoch)
        self.optimizer.step()
        self.method.after_step(epoch)
        return loss

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """The epoch's training: one pass over the shuffled training split with the method's loss and
        hooks, or the passes over chosen rows the method plans (`Method.training_passes`). Metrics are
        summed on the device and read once."""
        plan = self.method.training_passes(epoch)
        if plan is None:
            return self._pass(epoch, self._method_step)
        totals = [t for t in (self._pass_sums(epoch, partial(self._method_step, loss_of=p.loss), p.rows, p.zeroed)
                              for p in plan) if t[2]]  # a pass with no rows adds nothing
        if not totals:
            raise ValueError(f"{self.config.method} planned no training rows for epoch {epoch}")
        return self._train_metrics(epoch, *(sum(t[i] for t in totals) for i in range(4)))

    def _pass(self, epoch: int, step: Callable) -> dict[str, float]:
        """One pass over the shuffled training split; `step(out, y, epoch)` trains on each batch and
        returns its loss (`_method_step`, or a method's own — G-Blend's branch alone)."""
        return self._train_metrics(epoch, *self._pass_sums(epoch, step))

    def _pass_sums(self, epoch: int, step: Callable, rows: torch.Tensor | None = None, zeroed: tuple = ()):
        """One pass over the training rows `rows` (all when None) in a shuffled order, with the inputs of
        the `zeroed` modalities replaced by zeros: (loss sum, counts, samples, any non-finite loss)."""
        self.model.train()
        inputs, labels = self.splits["train"]
        bs = self.config.batch_size
        if rows is None:
            order = torch.randperm(len(labels), generator=self.generator)
        else:
            order = rows[torch.randperm(len(rows), generator=self.generator)]
        if len(order) % bs == 1:  # a batch of one breaks BatchNorm; that sample waits for the next epoch
            order = order[:-1]
        loss_sum = torch.zeros((), device=self.device)
        counts = 0
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs].to(self.device)
            batch = {m: self._with_training_noise(m, self._input(m, inputs[m][idx]), self.generator)
                     for m in self.modalities}
            for m in zeroed:
                batch[m] = torch.zeros_like(batch[m])
            y = labels[idx]
            out = self._forward(batch)
            loss = step(out, y, epoch)
            with torch.no_grad():
                nonfinite |= ~torch.isfinite(loss)
                loss_sum += loss.detach() * len(y)
                counts = counts + self._counts(out, y)
        return loss_sum, counts, len(order), nonfinite

    def _train_metrics(self, epoch: int, loss_sum, counts, n: int, nonfinite) -> dict[str, float]:
        if nonfinite.item():
            last = f"epoch {epoch - 1} in {self.out / 'last.pt'}" if epoch > 1 else "none (it was the first epoch)"
            raise NonFiniteLossError(
                f"the training loss became NaN/inf during epoch {epoch} ({self.config.method}, lr "
                f"{self.config.lr}); training stopped. Last good checkpoint: {last}. Try a lower --lr.")
        return {"train_loss": loss_sum.item() / n, **self._metrics(counts.cpu(), n)}

    def _with_training_noise(self, m: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x plus the dataset's training-time Gaussian noise for modality m, drawn from `generator`
        (on the CPU, so a run draws the same numbers on any device)."""
        std = self.data.train_noise_std.get(m, 0.0)
        if std > 0:
            x = x + std * torch.randn(x.shape, generator=generator).to(self.device)
        return x

    @torch.no_grad()
    def evaluate(self, split: str, training_noise: torch.Generator | None = None) -> dict[str, float]:
        """Metrics of every head on a whole split: loss_fusion, loss_head_<m> (mean task loss), and for
        each metric of the task (in [0, 1]) <metric>_fusion, <metric>_head_<m>, <metric>_part_<m>.
        With `training_noise` (a generator), the inputs get the noise training adds (G-Blend measures
        its losses on the distribution it trains on)."""
        self.model.eval()
        inputs, labels = self.splits[split]
        losses = torch.zeros(1 + len(self.modalities), device=self.device)
        counts = 0
        for start in range(0, len(labels), self.config.eval_batch_size):
            sl = slice(start, start + self.config.eval_batch_size)
            y = labels[sl]
            batch = {m: self._input(m, inputs[m][sl]) for m in self.modalities}
            if training_noise is not None:
                batch = {m: self._with_training_noise(m, x, training_noise) for m, x in batch.items()}
            out = self.method.readout(self.model(batch))
            losses += torch.stack([self.task.loss(out.fusion, y, reduction="sum")]
                                  + [self.task.loss(out.heads[m], y, reduction="sum") for m in self.modalities])
            counts = counts + self._counts(out, y)
        n = max(len(labels), 1)
        losses = (losses / n).tolist()
        return {"loss_fusion": losses[0], **{f"loss_head_{m}": v for m, v in zip(self.modalities, losses[1:])},
                **self._metrics(counts.cpu(), n)}

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _metric_columns(self, prefix: str, values: dict) -> dict:
        """`<prefix>_<metric>_fusion`, `_<m>` (the method's reading), `_head_<m>`, `_part_<m>` for each
        metric of the task."""
        row = {}
        for metric in self.task.metrics:
            row[f"{prefix}_{metric}_fusion"] = values[f"{metric}_fusion"]
            row.update({f"{prefix}_{metric}_{m}": values[f"{metric}_{self.source}_{m}"] for m in self.modalities})
            for reading in ("head", "part"):
                row.update({f"{prefix}_{metric}_{reading}_{m}": values[f"{metric}_{reading}_{m}"]
                            for m in self.modalities})
        return row

    def _row(self, epoch: int, lrs: dict, train: dict, val: dict) -> tuple[dict, dict]:
        src, metric = self.source, self.metric
        row = {"epoch": epoch, **{f"lr_{k}": v for k, v in lrs.items()}, "train_loss": train["train_loss"],
               f"train_{metric}_fusion": train[f"{metric}_fusion"]}
        row.update({f"train_{metric}_{m}": train[f"{metric}_{src}_{m}"] for m in self.modalities})
        row["val_loss_fusion"] = val["loss_fusion"]
        row.update(self._metric_columns("val", val))
        # Utilization, for every method, from the metric the method uses for its modality heads.
        source = val if self.config.utilization_split == "val" else train
        utilization = readings.utilization_from(source, self.modalities, metric, self.method.modality_source)
        row.update({f"u_{m}": u for m, u in utilization.u.items()})
        row["delta"] = utilization.delta  # at N = 2, |u_A − u_B| (Eq. 5)
        if len(self.modalities) > 2:
            row.update({f"delta_{a}_{b}": gap for (a, b), gap in utilization.deltas.items()})
            split = self.config.utilization_split
            row.update({f"{split}_{metric}_without_{m}": utilization.without[m] for m in self.modalities})
        return row, utilization.metrics

    def _checkpoint(self) -> dict:
        return {"epoch": len(self.history), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "method": self.method.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "history": self.history,
                "test_history": self.test_history,
                "config": self.config.to_dict()}

    def _restore(self, state: dict) -> int:
        """Put back the state `_checkpoint` saved (`runs.load_resume_state` checked its structure);
        returns its epoch. A checkpoint that does not fit this run's model, optimizer or method is one
        line, before anything in the folder is changed."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state["method"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"].cpu())
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            raise UserError(f"{self.out / runs.CHECKPOINT} does not fit this run ({first}); it is not this run's "
                            "checkpoint: train into another --out") from None
        self.history, self.test_history = state["history"], state["test_history"]
        return state["epoch"]

    def reference_weights(self, config: TrainConfig, name: str) -> dict:
        """Train (or reuse) a run this run builds on — e.g. a unimodal model it starts from — in
        `<out>/<name>/` on the same data, and return its selected epoch's weights (a `state_dict`)."""
        folder = self.out / name
        handed.no_links_below(self.out, folder)
        run_or_reuse(config, folder, self.data, progress=False, encoders=self.encoders)
        return runs.selected_weights(folder, self.device)

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
        """Train to `config.epochs` (continuing from `last.pt` when `resume`), testing every epoch (unless
        `config.test_split` is off), and write the summary of the epoch chosen on validation.
        `on_epoch_end(row)` runs after each checkpoint. Trains under `config.threads` torch threads with
        deterministic algorithms (`milesbook.provenance.reproducible`)."""
        with provenance.reproducible(self.config.threads, self.device):
            return self._fit(resume, on_epoch_end)

    def _fit(self, resume: bool, on_epoch_end) -> dict:
        state = runs.start(self.out, self.config.to_dict(), resume, self.device, self.provenance)
        start = 0
        if state is not None:
            start = self._restore(state)
            runs.reopen(self.out, self.config.to_dict())  # only now: every check has passed
        bar = tqdm(range(start + 1, self.config.epochs + 1), desc=f"{self.config.method}/{self.config.fusion}"
                   f"/seed{self.config.seed}", leave=False, initial=start, total=self.config.epochs,
                   **({} if self.progress else {"disable": True}))  # else TQDM_DISABLE decides
        for epoch in bar:
            if self.method.should_stop():
                break
            began = time.perf_counter()
            self.method.start_epoch(epoch)
            lrs = {g["name"]: float(g["lr"]) for g in self.optimizer.param_groups}
            train = self.train_epoch(epoch)
            val = self.evaluate("val")
            # Test now, on the weights validation just scored: `end_epoch` may change them (MSES puts a
            # stopped modality's best weights back), and an epoch's val and test must describe one model.
            test = self.evaluate("test") if self.config.test_split else None
            row, util_metrics = self._row(epoch, lrs, train, val)
            # The weights validation just scored (before `end_epoch` may change them), while they can be chosen.
            tolerance = self.config.selection_tolerance
            scored = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()} \
                if epoch in runs.can_be_selected([*self.history, row], tolerance, self.metric) else None
            validation = {"fusion": val[f"{self.metric}_fusion"],
                          **{m: val[f"{self.metric}_{self.source}_{m}"] for m in self.modalities}}
            self.method.end_epoch(EpochMetrics(epoch, util_metrics, row, self.metric, validation))
            row["seconds"] = time.perf_counter() - began  # so far; the checkpoint's copy of the row keeps this
            self.history.append(row)
            if test is not None:
                self.test_history.append({"epoch": epoch, **self._test_row(test)})
            if scored is not None:
                runs.save_candidate(self.out, epoch, scored)
            runs.save_checkpoint(self.out, self._checkpoint())
            runs.prune_candidates(self.out, self.history, tolerance, self.metric)
            row["seconds"] = time.perf_counter() - began  # the whole epoch, its checkpoint included
            runs.write_tables(self.out, self.history, self.test_history)
            bar.set_postfix(val_fusion=f"{row[f'val_{self.metric}_fusion']:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(row)
        return self.finish()

    def _test_row(self, test: dict) -> dict:
        return {"test_loss_fusion": test["loss_fusion"], **self._metric_columns("test", test)}

    def finish(self) -> dict:
        """Choose the best epoch on validation and write summary.json (see `milesbook.runs.finish`)."""
        return runs.finish(self.out, self.config.to_dict(), self.history, self.test_history,
                           modalities=self.modalities, task=self.task.name, metric=self.metric,
                           metrics=self.task.metrics, device=str(self.device), modality_reading=self.source,
                           heads="trained" if self.method.trains_heads else
                           "probes" if self.config.probes else "untrained", inference=self.method.inference,
                           method_entries=self.method.summary())


class TrainerContext(RunContext):
    """The run as a method sees it inside milesbook's Trainer: every capability, backed by the loop."""

    where = "milesbook's Trainer"
    provides = frozenset(CAPABILITIES)

    def __init__(self, trainer: Trainer):
        data = trainer.data
        super().__init__(trainer.model, trainer.optimizer, trainer.task, trainer.modalities, data.num_classes,
                         trainer.device, trainer.config.seed, trainer.config.batch_size, data.name,
                         trainer.config.epochs)
        self._trainer = trainer

    @property
    def train_size(self) -> int:
        return len(self._trainer.splits["train"][1])

    def batches_per_epoch(self) -> int:
        n, batch = self.train_size, self.batch_size
        return math.ceil((n - (n % batch == 1)) / batch)  # `_pass` drops a lone last sample

    def training_sample(self, count, generator, batch_size=None):
        trainer = self._trainer
        inputs, labels = trainer.splits["train"]
        index = torch.randperm(len(labels), generator=generator)[:count]
        size = batch_size or max(len(index), 1)
        for start in range(0, len(index), size):
            rows = index[start:start + size].to(self.device)
            yield ({m: trainer._with_training_noise(m, trainer._input(m, inputs[m][rows]), generator)
                    for m in self.modalities}, labels[rows])

    def evaluate(self, split, noise=None):
        return self._trainer.evaluate(split, training_noise=noise)

    def hold_out(self, name, fraction, seed):
        splits = self._trainer.splits
        inputs, labels = splits["train"]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        n_held = max(1, round(fraction * len(labels)))
        held, kept = order[:n_held].to(labels.device), order[n_held:].to(labels.device)
        splits[name] = ({m: take_rows(x, held) for m, x in inputs.items()}, labels[held])
        splits["train"] = ({m: take_rows(x, kept) for m, x in inputs.items()}, labels[kept])

    def train_pass(self, epoch, loss_fn):
        def step(out, y, epoch):
            loss = loss_fn(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return loss
        self._trainer._pass(epoch, step)

    def reference_weights(self, config, name):
        return self._trainer.reference_weights(config, name)

    @torch.no_grad()
    def training_outputs(self):
        trainer = self._trainer
        inputs, labels = trainer.splits["train"]
        was_training = trainer.model.training
        trainer.model.eval()
        outs = []
        for start in range(0, len(labels), trainer.config.eval_batch_size):
            sl = slice(start, start + trainer.config.eval_batch_size)
            out = trainer.method.readout(trainer.model({m: trainer._input(m, inputs[m][sl]) for m in self.modalities}))
            outs.append(out)
        trainer.model.train(was_training)
        return FusionOutput(torch.cat([o.fusion for o in outs]),
                            {m: torch.cat([o.heads[m] for o in outs]) for m in self.modalities},
                            {m: torch.cat([o.parts[m] for o in outs]) for m in self.modalities})


def _named(config: TrainConfig, data: MultimodalDataset) -> TrainConfig:
    """Your own data given as an object (`from_arrays`, `from_folder`): the run records its name, not
    the default dataset's (a config that names the data's folder keeps that path)."""
    own = data.origin and not is_path(config.dataset) and config.dataset != data.name
    return replace(config, dataset=data.name) if own else config


def run_or_reuse(config: TrainConfig, folder, dataset: MultimodalDataset | None = None, progress: bool = True,
                 encoders: dict | None = None) -> dict:
    """The summary of `config` in `folder`: read if finished with this configuration under the same
    conditions (`milesbook.runs.reusable`), else trained (continuing a checkpoint made under the same
    provenance). A run that cannot be used is moved aside (`<folder>.stale-<k>`), with one line saying why."""
    folder = Path(folder)
    config.check()
    data = dataset if dataset is not None else load_dataset(config.dataset, **config.dataset_options)
    config = _named(config, data)
    current = provenance.collect(resolve_device(config.device), config.threads, data,
                                 *factory_encoders(config, data, encoders))
    summary, why = runs.reusable(folder, config.to_dict(), current)
    if summary is not None:
        return summary
    if why is not None:
        aside = runs.move_aside(folder)
        tqdm.write(f"milesbook: retraining {folder}: {why}; the earlier run is kept in {aside}", file=sys.stderr)
    return _train(config, folder, (folder / runs.CHECKPOINT).exists(), data, progress, None, current, encoders)


def train(config: TrainConfig, out, *, resume: bool = False, dataset: MultimodalDataset | None = None,
          progress: bool = True, on_epoch_end=None, encoders: dict | None = None) -> dict:
    """Train one run into the folder `out` and return its summary (see the module docstring).
    `encoders` {modality: nn.Module}: your own encoders for those modalities (`models.adopt_encoder`)."""
    config.check()  # bad settings are one line before anything is loaded
    data = dataset if dataset is not None else load_dataset(config.dataset, **config.dataset_options)
    config = _named(config, data)
    current = provenance.collect(resolve_device(config.device), config.threads, data,
                                 *factory_encoders(config, data, encoders))
    return _train(config, Path(out), resume, data, progress, on_epoch_end, current, encoders)


def factory_encoders(config: TrainConfig, data: MultimodalDataset, given: dict | None = None) -> tuple[dict, dict]:
    """The encoders whose identity a run's provenance records, with where each came from ({modality:
    nn.Module}, {modality: origin}): those you gave in memory ("in memory"), and those the config names
    as your own code ("factory package.module:factory"), built exactly as the run builds them (its seed)
    to hash their initial weights — so a run is reused, resumed and verified only with the same code."""
    from .handed import factory_kinds
    given = _for_run(given, config)
    origins = {m: "in memory" for m in given}
    kinds = factory_kinds(config.encoder)
    only = unimodal_modality(config.method)
    modalities = (only,) if only else data.modalities
    named = {m: kinds.get(m, kinds.get("*")) for m in modalities if m not in given and kinds.get(m, kinds.get("*"))}
    if not named:
        return given, origins
    with torch.random.fork_rng(devices=[]):  # the Trainer's draws, replayed aside
        torch.manual_seed(config.seed)
        model = build_model({m: data.shapes[m] for m in modalities}, data.num_classes, config.fusion, config.encoder,
                            config.feature_dim, data.encoder_options, given)
    built = {m: model.encoders[m] for m in named}
    return {**given, **built}, {**origins, **{m: f"factory {kind}" for m, kind in named.items()}}


def _for_run(encoders: dict | None, config: TrainConfig) -> dict:
    """The given encoders of the modalities this run trains (a unimodal reference: its one)."""
    only = unimodal_modality(config.method)
    return {m: e for m, e in (encoders or {}).items() if only is None or m == only}


def _train(config, out: Path, resume: bool, data, progress, on_epoch_end, current: dict, encoders=None) -> dict:
    if resume and (out / runs.CHECKPOINT).exists():
        # Refused before anything is built or trained (a method's reference runs included).
        runs.check_resumable(out, config.to_dict(), current)
    return Trainer(config, out, data, progress, current, encoders).fit(resume=resume, on_epoch_end=on_epoch_end)
