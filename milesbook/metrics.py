"""The two kinds of task and their metrics: single-label (softmax, cross-entropy, accuracy) and
multi-label (one sigmoid per class, binary cross-entropy, F1).

A task turns a batch's logits into *counts* — small tensors that add up over batches on the device
(correct predictions; or per-class true positives, false positives, false negatives) — and turns the
summed counts into metrics once per pass, so a pass reads the device once, not once per batch.

The metric M of the utilization rate (Eq. 4) and of model selection is the task's `headline`:
accuracy for single-label data, micro-F1 for multi-label data (macro-F1 is reported beside it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

METRIC_LABELS = {"acc": "accuracy", "f1micro": "micro-F1", "f1macro": "macro-F1"}


class Multiclass:
    """One class per sample: `labels` (N,) int64 class ids; logits (N, C)."""
    name = "multiclass"
    metrics = ("acc",)
    headline = "acc"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(logits, labels, reduction=reduction)

    def counts(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(1,) number of correct argmax predictions."""
        return (logits.argmax(1) == labels).sum().reshape(1).float()

    def count_size(self, num_classes: int) -> int:
        return 1

    def from_counts(self, counts: torch.Tensor, n: int) -> dict[str, float]:
        return {"acc": counts[0].item() / max(n, 1)}


class Multilabel:
    """Any number of classes per sample: `labels` (N, C) float 0/1; logits (N, C); a class is
    predicted when its logit is > 0 (probability > 0.5).

    Binary cross-entropy is averaged over samples and classes (`binary_cross_entropy_with_logits`).
    micro-F1 pools every (sample, class) decision: 2·TP / (2·TP + FP + FN). macro-F1 is the mean of
    the per-class F1s, a class with no positives and no predictions counting as 0 (scikit-learn's
    `zero_division=0`). Micro is the headline: it is the figure MM-IMDb papers lead with, and it does
    not swing on the rare genres (Film-Noir has a few dozen test movies)."""
    name = "multilabel"
    metrics = ("f1micro", "f1macro")
    headline = "f1micro"

    def loss(self, logits, labels, reduction: str = "mean"):
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
        return loss.mean() if reduction == "mean" else loss.sum()

    def counts(self, logits, labels):
        """(3·C,) per-class true positives, false positives, false negatives."""
        predicted = (logits > 0).float()
        tp = (predicted * labels).sum(0)
        fp = (predicted * (1 - labels)).sum(0)
        fn = ((1 - predicted) * labels).sum(0)
        return torch.cat([tp, fp, fn])

    def count_size(self, num_classes: int) -> int:
        return 3 * num_classes

    def from_counts(self, counts, n):
        tp, fp, fn = counts.reshape(3, -1)
        micro = (2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1)).item()
        per_class = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
        return {"f1micro": micro, "f1macro": per_class.mean().item()}


TASKS = {"multiclass": Multiclass(), "multilabel": Multilabel()}


def task_of(name: str):
    from .errors import check_choice
    return TASKS[check_choice("task", name, TASKS)]


def f1_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """micro- and macro-F1 of multi-label `logits` (N, C) against 0/1 `labels` (N, C)."""
    task = TASKS["multilabel"]
    return task.from_counts(task.counts(logits, labels), len(labels))
