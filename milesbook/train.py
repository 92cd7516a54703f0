"""The one training loop. Every method (MILES, the baselines, the references) runs through `train`;
what differs between them lives in `milesbook.methods`.

Metric columns are named `<split>_<metric>_<who>`: the metric is `acc` on single-label data and
`f1micro` / `f1macro` on multi-label data (`milesbook.metrics`; the first is the headline M used for
utilization and selection, named in `summary.json` as `metric`); below, `acc` stands for it.

A run writes a folder (the contract the notebooks and `compare` read):
- `config.json`   — the TrainConfig;
- `history.csv`   — one row per epoch: `epoch`, `lr_fusion`, `lr_<m>` (rates used during the epoch),
  `train_loss`, `train_acc_*`, `val_loss_fusion`, `val_acc_fusion`, `val_acc_<m>` (the modality
  metric the method uses), `val_acc_head_<m>`, `val_acc_part_<m>` (both readings), `u_<m>` and
  `delta` (end of the epoch, for every method), `seconds`;
- `test_history.csv` — the test metrics of every epoch, kept apart so that nothing selects on them;
  they let the summary report the test score at any validation-chosen epoch without saving weights;
- `summary.json`  — `best_epoch`, `test_acc_fusion`, `test_acc_<m>` at the best epoch, the same at
  the strict-rule epoch (`strict_*`) and at the last epoch (`last_*`), and the run's totals;
- `last.pt` — the checkpoint after every epoch, for `resume`.

Best epoch (`select_best_epoch`): among the epochs whose validation fusion accuracy is within
`selection_tolerance` (default 0.005, half a point) of the highest, the one with the lowest validation
fusion loss; exact ties go to the later epoch. Validation fusion accuracy saturates near 100 % early on
easy data; taking the first maximum would pick an epoch whose weak encoder is still under-trained (a
single lucky epoch at 100 % beats fifty at 99.8 %). The strict rule (tolerance 0) is reported too.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .data import MultimodalDataset, load_dataset
from .errors import NonFiniteLossError, UserError, check_choice
from .methods import EpochMetrics, build_method, check_method_options, unimodal_modality
from .metrics import task_of
from .miles import conditional_utilization, utilization_gap
from .models import build_model


@dataclass
class TrainConfig:
    dataset: str = "digits-av"
    dataset_options: dict = field(default_factory=dict)  # the dataset's documented knobs
    method: str = "miles"
    fusion: str = "concat"
    encoder: str = "auto"            # one kind for every modality, or per modality: "image=resnet50,text=bow"
    feature_dim: int = 64
    epochs: int = 30
    lr: float = 1e-3
    optimizer: str = "adam"          # "adam" (β 0.9, 0.999; the MILES paper) or "sgd" (momentum 0.9)
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    tau: float = 0.2                 # MILES threshold on δ, in [0, 1]
    mu: float = 0.5                  # MILES rate multiplier for the dominant encoder, in (0, 1]
    # Baselines' hyper-parameters (see milesbook.baselines for what each does and its range).
    ogm_alpha: float = 0.5           # OGM/OGM-GE modulation strength α (paper: 0.1–1.0)
    ogm_start: int = 1               # first epoch with modulation (inclusive, counted from 1)
    ogm_end: int = 50                # last epoch with modulation (inclusive)
    ogm_params: str = "weights"      # "weights" (every ≥2-D encoder tensor) or "conv" (4-D only, official)
    ogm_source: str = "parts"        # "parts" (L_AB only, official) or "heads" (Eq. 3, trained heads)
    gblend_mode: str = "online"      # "offline" (estimate once) or "online" (every gblend_every epochs)
    gblend_every: int = 10           # super-epoch length for online G-Blend
    gblend_epochs: int = 2           # n: epochs each head trains alone per estimation
    gblend_holdout: float = 0.1      # fraction of the training split held out as V
    mslr_lrs: dict = field(default_factory=dict)  # {modality: best unimodal lr} for MSLR-K/S (and D's start)
    mslr_lambda: float = 0.5         # MSLR-S smoothing λ in [0, 1]
    mslr_window: int = 5             # MSLR-D window w (epochs)
    mses_patience: int = 5           # MSES patience (epochs, paper: 3–10)
    mses_restore: bool = True        # MSES: restore a stopped modality's best weights
    utilization_split: str = "val"   # "val" (the paper's default) or "train" (Table VI ablation)
    probes: bool = True              # train detached linear probes on methods that train no heads
    eval_batch_size: int = 1000
    selection_tolerance: float = 0.005  # val fusion accuracies this close to the best count as tied

    def check(self) -> "TrainConfig":
        check_choice("utilization split", self.utilization_split, ["val", "train"])
        check_choice("device", self.device, ["auto", "cpu", "cuda"])
        check_choice("optimizer", self.optimizer, ["adam", "sgd"])
        if self.epochs < 1 or self.batch_size < 2:
            raise UserError(f"--epochs must be ≥ 1 and --batch-size ≥ 2, got {self.epochs}, {self.batch_size}")
        check_method_options(self)
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Settings that only some methods read: they do not make two runs of any other method differ (so
# `compare --ogm-alpha 0.8` retrains OGM, not vanilla). A key ending in "_" is a prefix.
METHOD_FIELDS = {"tau": {"miles"}, "mu": {"miles"}, "ogm_": {"ogm", "ogm-ge"}, "gblend_": {"gblend"},
                 "mslr_": {"mslr-k", "mslr-s", "mslr-d"}, "mses_": {"mses"}}


def relevant_config(config: dict) -> dict:
    """The settings of a run's config (as a dict) that can change its results; the device never does."""
    def used(field: str) -> bool:
        for key, methods in METHOD_FIELDS.items():
            if field == key or (key.endswith("_") and field.startswith(key)):
                return config["method"] in methods
        return field != "device"
    return {k: v for k, v in config.items() if used(k)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file and rename, so a killed run never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, value) -> None:
    _atomic_write(Path(path), lambda p: p.write_text(json.dumps(value, indent=2) + "\n"))


def write_history(path: Path, rows: list[dict]) -> None:
    def write(p):
        with open(p, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    _atomic_write(Path(path), write)


def read_history(run_dir) -> list[dict]:
    """history.csv as a list of {column: float} rows."""
    with open(Path(run_dir) / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def history_metric(row: dict) -> str:
    """The headline metric a history (or summary) row is written in: "acc" or "f1micro"."""
    if "metric" in row:
        return row["metric"]
    return "f1micro" if any("_f1micro_" in f"_{key}" for key in row) else "acc"


def select_best_epoch(history: list[dict], tolerance: float = 0.0, metric: str = "acc") -> int:
    """The epoch (1-based `epoch` value) chosen on validation: among rows whose `val_<metric>_fusion`
    is within `tolerance` of the maximum, the lowest `val_loss_fusion`; exact ties go to the later epoch."""
    key = f"val_{metric}_fusion"
    top = max(row[key] for row in history)
    tied = [row for row in history if row[key] >= top - tolerance]
    return int(min(tied, key=lambda row: (row["val_loss_fusion"], -row["epoch"]))["epoch"])


class Trainer:
    """Holds one run's data, model, optimizer and method; `fit` trains to `config.epochs`."""

    def __init__(self, config: TrainConfig, out: Path, dataset: MultimodalDataset | None = None,
                 progress: bool = True):
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

        torch.manual_seed(config.seed)
        shapes = {m: self.data.shapes[m] for m in self.modalities}
        self.model = build_model(shapes, self.data.num_classes, config.fusion, config.encoder,
                                 config.feature_dim, self.data.encoder_options).to(self.device)
        groups = self.model.param_groups(config.lr)
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999)) if config.optimizer == "adam" \
            else torch.optim.SGD(groups, momentum=0.9)
        self.generator = torch.Generator().manual_seed(config.seed)  # batch order and training noise
        self.splits = {name: ({m: s.inputs[m].to(self.device) for m in self.modalities}, s.labels.to(self.device))
                       for name, s in self.data.splits.items()}
        self.method.setup(self)
        self.history: list[dict] = []       # one row per epoch (history.csv)
        self.test_history: list[dict] = []  # one row per epoch (test_history.csv)

    # -- checks ------------------------------------------------------------------------------------
    def _check_data(self) -> None:
        shapes = self.data.shapes
        for name, split in self.data.splits.items():
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
    def _who(self) -> list[str]:
        """The logits every pass scores: the fusion head, each unimodal head, each fusion part."""
        return ["fusion", *[f"head_{m}" for m in self.modalities], *[f"part_{m}" for m in self.modalities]]

    def _counts(self, out, labels) -> torch.Tensor:
        """The task's counts (`milesbook.metrics`) of every logit in `_who()` order, concatenated."""
        logits = [out.fusion, *[out.heads[m] for m in self.modalities], *[out.parts[m] for m in self.modalities]]
        return torch.cat([self.task.counts(x, labels) for x in logits])

    def _metrics(self, counts: torch.Tensor, n: int) -> dict[str, float]:
        """{"<metric>_<who>": value} from counts summed over a pass of `n` samples."""
        size = self.task.count_size(self.data.num_classes)
        values = {}
        for i, who in enumerate(self._who()):
            for metric, value in self.task.from_counts(counts[i * size:(i + 1) * size], n).items():
                values[f"{metric}_{who}"] = value
        return values

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
        return self.model(inputs, detach_heads=not self.method.trains_heads)

    def train_epoch(self, epoch: int, loss_override: Callable | None = None) -> dict[str, float]:
        """One pass over the shuffled training split. Metrics are summed on the device and read once.
        `loss_override(out, y)` replaces the method's loss and gradient hook (G-Blend's estimation)."""
        self.model.train()
        inputs, labels = self.splits["train"]
        n, bs = len(labels), self.config.batch_size
        order = torch.randperm(n, generator=self.generator)
        if n % bs == 1:  # a batch of one breaks BatchNorm; that sample waits for the next epoch
            order = order[:-1]
        loss_sum = torch.zeros((), device=self.device)
        counts = 0
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs].to(self.device)
            batch = {}
            for m in self.modalities:
                x = self._input(m, inputs[m][idx])
                std = self.data.train_noise_std.get(m, 0.0)
                if std > 0:
                    noise = torch.randn(x.shape, generator=self.generator).to(self.device)
                    x = x + std * noise
                batch[m] = x
            y = labels[idx]
            out = self._forward(batch)
            loss = loss_override(out, y) if loss_override else self.method.loss(out, y, self.task.loss)
            probe_loss = 0.0
            if not self.method.trains_heads and self.config.probes and not loss_override:
                probe_loss = sum(self.task.loss(h, y) for h in out.heads.values())
            self.optimizer.zero_grad(set_to_none=True)
            (loss + probe_loss).backward()
            if not loss_override:
                self.method.after_backward(out, y, epoch)
            self.optimizer.step()
            with torch.no_grad():
                nonfinite |= ~torch.isfinite(loss)
                loss_sum += loss.detach() * len(y)
                counts = counts + self._counts(out, y)
        if nonfinite.item():
            last = f"epoch {epoch - 1} in {self.out / 'last.pt'}" if epoch > 1 else "none (it was the first epoch)"
            raise NonFiniteLossError(
                f"the training loss became NaN/inf during epoch {epoch} ({self.config.method}, lr "
                f"{self.config.lr}); training stopped. Last good checkpoint: {last}. Try a lower --lr.")
        return {"train_loss": loss_sum.item() / len(order), **self._metrics(counts.cpu(), len(order))}

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of every head on a whole split: loss_fusion, loss_head_<m> (mean task loss), and for
        each metric of the task (in [0, 1]) <metric>_fusion, <metric>_head_<m>, <metric>_part_<m>."""
        self.model.eval()
        inputs, labels = self.splits[split]
        losses = torch.zeros(1 + len(self.modalities), device=self.device)
        counts = 0
        for start in range(0, len(labels), self.config.eval_batch_size):
            sl = slice(start, start + self.config.eval_batch_size)
            y = labels[sl]
            out = self.model({m: self._input(m, inputs[m][sl]) for m in self.modalities})
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
        util_metrics = {"fusion": source[f"{metric}_fusion"], **{m: source[f"{metric}_{src}_{m}"] for m in self.modalities}}
        if len(self.modalities) == 2:
            a, b = self.modalities
            u_a, u_b = conditional_utilization(util_metrics["fusion"], util_metrics[a], util_metrics[b])
            row.update({f"u_{a}": u_a, f"u_{b}": u_b, "delta": utilization_gap(u_a, u_b)})
        else:
            row.update({f"u_{m}": math.nan for m in self.modalities} | {"delta": math.nan})
        return row, util_metrics

    def _checkpoint(self) -> dict:
        return {"epoch": len(self.history), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "method": self.method.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "history": self.history,
                "test_history": self.test_history,
                "config": asdict(self.config)}

    def resume(self) -> int:
        """Restore the state saved after the last finished epoch; returns that epoch (0 if none)."""
        path = self.out / "last.pt"
        if not path.exists():
            return 0
        state = torch.load(path, map_location=self.device, weights_only=False)
        saved = {k: v for k, v in relevant_config(state["config"]).items() if k != "epochs"}
        mine = {k: v for k, v in relevant_config(asdict(self.config)).items() if k != "epochs"}
        if saved != mine:
            diff = sorted(k for k in mine if saved.get(k) != mine[k])
            raise UserError(f"{self.out} holds a run with a different configuration ({', '.join(diff)}); "
                            "resume it with the same flags or choose another --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.history, self.test_history = state["history"], state["test_history"]
        return state["epoch"]

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
        """Train to `config.epochs` (continuing from `last.pt` when `resume`), testing every epoch, and
        write the summary of the epoch chosen on validation. `on_epoch_end(row)` runs after each checkpoint."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not resume and (self.out / "last.pt").exists():
            raise UserError(f"{self.out} already holds a run; pass --resume to continue it, or choose "
                            "another --out")
        start = self.resume() if resume else 0
        write_json(self.out / "config.json", asdict(self.config))
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
            row, util_metrics = self._row(epoch, lrs, train, val)
            self.method.end_epoch(EpochMetrics(epoch, util_metrics, row, self.metric))
            row["seconds"] = time.perf_counter() - began  # the method's own work + train + validation
            self.history.append(row)
            self.test_history.append({"epoch": epoch, **self._test_row(self.evaluate("test"))})
            _atomic_write(self.out / "last.pt", lambda p: torch.save(self._checkpoint(), p))
            write_history(self.out / "history.csv", self.history)
            write_history(self.out / "test_history.csv", self.test_history)
            bar.set_postfix(val_fusion=f"{row[f'val_{self.metric}_fusion']:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(row)
        return self.finish()

    def _test_row(self, test: dict) -> dict:
        return {"test_loss_fusion": test["loss_fusion"], **self._metric_columns("test", test)}

    def finish(self) -> dict:
        """Choose the best epoch on validation and write summary.json with its test metrics."""
        best = select_best_epoch(self.history, self.config.selection_tolerance, self.metric)
        strict = select_best_epoch(self.history, 0.0, self.metric)
        at = {e: self.test_history[e - 1] for e in (best, strict, len(self.history))}
        summary = {"method": self.config.method, "fusion": self.config.fusion, "seed": self.config.seed,
                   "dataset": self.config.dataset, "modalities": list(self.modalities),
                   "task": self.task.name, "metric": self.metric, "metrics": list(self.task.metrics),
                   "epochs": len(self.history), "best_epoch": best, "strict_best_epoch": strict,
                   "selection": f"val_{self.metric}_fusion within {self.config.selection_tolerance} of the max, then "
                                "min val_loss_fusion, then later epoch",
                   **{k: v for k, v in at[best].items() if k != "epoch"},
                   **{f"strict_{k}": v for k, v in at[strict].items() if k != "epoch"},
                   **{f"last_{k}": v for k, v in at[len(self.history)].items() if k != "epoch"},
                   **{f"best_{k}": v for k, v in self.history[best - 1].items() if k.startswith("val_")},
                   "train_seconds": sum(r["seconds"] for r in self.history), "device": str(self.device)}
        write_json(self.out / "summary.json", summary)
        return summary


def train(config: TrainConfig, out, *, resume: bool = False, dataset: MultimodalDataset | None = None,
          progress: bool = True, on_epoch_end=None) -> dict:
    """Train one run into the folder `out` and return its summary (see the module docstring)."""
    return Trainer(config, Path(out), dataset, progress).fit(resume=resume, on_epoch_end=on_epoch_end)
