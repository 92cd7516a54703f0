"""Readings of a multimodal model on a split: the metric of the fused prediction, of each modality,
of the model without each modality, and from them the conditional utilization rates u_m and their
gap δ (`milesbook.miles`, Eq. 4–5). The one place the Trainer, the MILES scheduler's users, the
own-loop `Balancer`, the Lightning callback and `diagnose` get them.

For your own model and loader::

    milesbook.utilization(model, val_loader)          # {"audio": 0.12, "image": 0.31}
    milesbook.readings.read(model, val_loader).delta  # δ

A model follows the contract (`check_output`) when its forward takes {modality: batch} and returns a
`FusionOutput`: the fused logits, and per modality either a unimodal head's logits (`heads`) or the
fusion head's share of the fused logits (`parts`), each (N, classes). A loader yields
`(inputs, labels)` with inputs {modality: tensor}.

How it is computed: each batch's logits become *counts* (`milesbook.metrics`: correct predictions,
or per-class TP/FP/FN) summed on the device and read once; under `torch.distributed` the counts and
sample numbers are summed over all processes before any rate is computed, so every process reads
the same metrics from the same totals (averaging per-process rates would not be the split's rate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from .errors import UserError
from .metrics import task_of
from .miles import metrics_without, pairs_of, utilization_gap, utilization_without

READINGS = ("heads", "parts")  # which logits stand for "modality m": unimodal heads or fusion-head parts


def logit_names(modalities: Sequence[str]) -> list[str]:
    """The logits a pass scores, in order: "fusion", "head_<m>", "part_<m>" for every modality, and
    with more than two modalities "without_<m>" (the model without m: the sum of the others')."""
    names = ["fusion", *[f"head_{m}" for m in modalities], *[f"part_{m}" for m in modalities]]
    if len(modalities) > 2:
        names += [f"without_{m}" for m in modalities]
    return names


def check_output(out, modalities: Sequence[str], reading: str = "heads") -> None:
    """One line saying what a model's output lacks to be read: a `FusionOutput`-like object with
    `fusion` and, for every modality, `heads[m]` (reading "heads") or `parts[m]` (reading "parts")."""
    if not hasattr(out, "fusion") or not isinstance(getattr(out, reading, None), dict):
        raise UserError(f"the model's forward returned {type(out).__name__}; balancing needs a FusionOutput "
                        f"(milesbook.models.FusionOutput: fusion logits, and {reading}[modality] logits) — "
                        "see docs/own-loop.md, 'The model contract'")
    missing = [m for m in modalities if m not in getattr(out, reading)]
    if missing:
        raise UserError(f"the model's FusionOutput has no {reading} logits for {missing}; a method reading "
                        f"'{reading}' needs one (N, classes) tensor per modality in out.{reading}")


def _logits(out, modalities: Sequence[str], reading: str) -> list[torch.Tensor]:
    heads = [out.heads[m] for m in modalities] if out.heads else [None] * len(modalities)
    parts = [out.parts[m] for m in modalities] if out.parts else [None] * len(modalities)
    logits = [out.fusion, *heads, *parts]
    if len(modalities) > 2:
        chosen = out.heads if reading == "heads" else out.parts
        logits += [sum(chosen[k] for k in modalities if k != m) for m in modalities]
    return logits


def counts(task, out, labels: torch.Tensor, modalities: Sequence[str], reading: str,
           num_classes: int) -> torch.Tensor:
    """The task's counts of every logit in `logit_names` order, concatenated (on the logits' device).
    A reading the model does not give (a model with heads only has no parts) counts as zeros."""
    size = task.count_size(num_classes)
    return torch.cat([task.counts(x, labels) if x is not None
                      else torch.zeros(size, device=labels.device) for x in _logits(out, modalities, reading)])


def metrics_from_counts(task, summed: torch.Tensor, n: int, modalities: Sequence[str],
                        num_classes: int) -> dict[str, float]:
    """{"<metric>_<logit name>": value in [0, 1]} from counts summed over a pass of `n` samples."""
    size = task.count_size(num_classes)
    values = {}
    for i, name in enumerate(logit_names(modalities)):
        for metric, value in task.from_counts(summed[i * size:(i + 1) * size], n).items():
            values[f"{metric}_{name}"] = value
    return values


def reduce_over_processes(summed: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    """(counts, n) summed over every process of an initialised `torch.distributed` group; as given
    otherwise. Counts, not rates: the rate of the summed counts is the whole split's."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
            or torch.distributed.get_world_size() == 1:
        return summed, n
    # float64 holds counts exactly up to 2^53; the tensor goes where the process group can send it
    backend = torch.distributed.get_backend()
    device = summed.device if backend == "nccl" else torch.device("cpu")
    total = torch.cat([summed.detach().double().flatten(), torch.tensor([float(n)], dtype=torch.float64)]).to(device)
    torch.distributed.all_reduce(total)
    return total[:-1].to(summed.device, summed.dtype), int(total[-1].item())


@dataclass
class Utilization:
    """What MILES reads from one split: `metrics` {"fusion": M_all, m: M_m (the reading), and with
    more than two modalities "without_<m>": M_{−m}}, `without` {m: M_{−m}}, the rates `u` {m: u_m},
    `delta` (max u − min u; at N = 2 |u_A − u_B|, Eq. 5) and each pair's gap `deltas` {(a, b): δ_ab}.
    With one modality the rates and gaps are NaN."""
    metrics: dict[str, float]
    without: dict[str, float]
    u: dict[str, float]
    delta: float
    deltas: dict[tuple[str, str], float] = field(default_factory=dict)


def utilization_from(values: dict[str, float], modalities: Sequence[str], metric: str,
                     reading: str) -> Utilization:
    """The `Utilization` of a pass's metric values (`metrics_from_counts`'s keys) on metric M."""
    single = "head" if reading == "heads" else "part"
    metrics = {"fusion": values[f"{metric}_fusion"], **{m: values[f"{metric}_{single}_{m}"] for m in modalities}}
    if len(modalities) == 1:
        return Utilization(metrics, {}, {m: math.nan for m in modalities}, math.nan)
    if len(modalities) > 2:
        metrics.update({f"without_{m}": values[f"{metric}_without_{m}"] for m in modalities})
    without = metrics_without(metrics, modalities)
    u = utilization_without(metrics["fusion"], without)
    return Utilization(metrics, without, u, max(u.values()) - min(u.values()),
                       {(a, b): utilization_gap(u[a], u[b]) for a, b in pairs_of(modalities)})


@dataclass
class Readings:
    """A model's readings on one split: `values` {"<metric>_<logit name>": value} for every metric of
    the task, `headline` the `Utilization` on the headline `metric` (u_m, δ, M_{−m}), and the number of
    samples `n`."""
    values: dict[str, float]
    metric: str
    headline: Utilization
    n: int

    @property
    def utilization(self) -> dict[str, float]:
        """{modality: u_m}"""
        return dict(self.headline.u)

    @property
    def delta(self) -> float:
        return self.headline.delta

    @property
    def metrics(self) -> dict[str, float]:
        """{"fusion": M_all, modality: M_m, …} — what `milesbook.MILES.step` takes."""
        return dict(self.headline.metrics)


def _batches(loader: Iterable):
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], dict)):
            raise UserError(f"a loader for readings yields (inputs, labels) with inputs {{modality: tensor}}; "
                            f"got a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
                                                              else ""))
        yield batch


def _device_of(model) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def read(model, loader: Iterable, *, task: str = "multiclass", reading: str = "heads", num_classes: int | None = None,
         modalities: Sequence[str] | None = None, readout=None) -> Readings:
    """Score `model` in eval mode on every batch of `loader` ((inputs, labels) with inputs {modality:
    tensor}) and return its `Readings`. `task`: "multiclass" (accuracy) or "multilabel" (micro-F1,
    macro-F1); `reading`: "heads" (each modality's unimodal head) or "parts" (its share of the fusion
    head); `modalities`: default the inputs' keys; `readout(out)`: a method's own prediction rule.
    Under `torch.distributed` every process must call it; all get the same readings."""
    from .errors import check_choice
    task_rule = task_of(task)
    check_choice("reading", reading, READINGS)
    device = _device_of(model)
    modes = [(module, module.training) for module in model.modules()]  # a frozen part stays as you left it
    model.eval()
    summed, n = None, 0
    try:
        for inputs, labels in _batches(loader):
            inputs = {m: x.to(device) for m, x in inputs.items()}
            labels = labels.to(device)
            names = tuple(modalities or inputs)
            out = model(inputs)
            if readout is not None:
                out = readout(out)
            check_output(out, names, reading)
            classes = num_classes or out.fusion.shape[1]
            batch_counts = counts(task_rule, out, labels, names, reading, classes)
            summed = batch_counts if summed is None else summed + batch_counts
            n += len(labels)
    finally:
        for module, training in modes:
            module.training = training
    if summed is None:
        raise UserError("the loader gave no batch: readings need at least one sample")
    summed, n = reduce_over_processes(summed, n)
    values = metrics_from_counts(task_rule, summed.cpu(), n, names, classes)
    return Readings(values, task_rule.headline, utilization_from(values, names, task_rule.headline, reading), n)


def utilization(model, loader: Iterable, **options) -> dict[str, float]:
    """{modality: u_m}, the conditional utilization rates (Eq. 4) of `model` on `loader`'s split
    (options as `read`)."""
    return read(model, loader, **options).utilization
