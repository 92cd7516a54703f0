"""G-Blend — Wang, Tran & Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020.

Loss weights from each head's overfitting-to-generalization ratio, estimated before epochs
(`start_epoch`). References: the paper; MultiBench `training_structures/gradient_blend.py`.
"""
from __future__ import annotations

import copy
import math

import torch

from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register


def gblend_weights(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
                   min_overfit: float = 1e-3) -> dict[str, float]:
    """G-Blend's loss weights from (train loss, held-out loss) of each head before and after n epochs.

    ΔG_k = L^V_N − L^V_{N+n}, clipped at 0 (a head that got worse on V earns no weight);
    ΔO_k = (L^V_{N+n} − L^T_{N+n}) − (L^V_N − L^T_N); w_k ∝ ΔG_k / ΔO_k², normalised to sum 1.
    |ΔO| is floored at `min_overfit` so a head that did not overfit at all gets a large, finite weight.
    If no head improved on V (every ΔG = 0) the weights are uniform."""
    raw = {}
    for k in before:
        (train_n, held_n), (train_nn, held_nn) = before[k], after[k]
        gain = max(held_n - held_nn, 0.0)
        overfit = (held_nn - train_nn) - (held_n - train_n)
        raw[k] = gain / max(abs(overfit), min_overfit) ** 2
    total = sum(raw.values())
    if total <= 0 or not math.isfinite(total):
        return {k: 1.0 / len(raw) for k in raw}
    return {k: v / total for k, v in raw.items()}



GBLEND_KNOBS = (
    Hyperparameter("gblend_mode", "online", "online (re-estimate every gblend_every epochs) | offline (once)",
                   choices=("online", "offline")),
    Hyperparameter("gblend_every", 10, "online re-estimation period (epochs, ≥ 1)",
                   valid=lambda v: v >= 1, rule="≥ 1 epoch",
                   search=SearchRange(5, 20, source="G-Blend paper: a super-epoch of 5–20 epochs online")),
    Hyperparameter("gblend_epochs", 2, "n: epochs each head trains alone per estimation",
                   valid=lambda v: v >= 1, rule="≥ 1"),
    Hyperparameter("gblend_holdout", 0.1, "held-out fraction of the training split, in (0, 0.5)",
                   valid=lambda v: 0 < v < 0.5, rule="in (0, 0.5) (a fraction of the training split)"),
)

@register
class GBlend(Method):
    """Gradient-Blending: L = w_AB·L_AB + Σ_m w_m·L_m with weights from each head's
    overfitting-to-generalization ratio (`gblend_weights`), the paper's formula (one public variant
    uses the absolute held-out loss instead of its decrease; we do not).

    A fraction `gblend_holdout` of the training split is held out as V for the whole run (G-Blend
    trains on the rest). Before epoch 1 (`gblend_mode="offline"`) or every `gblend_every` epochs
    (`"online"`), each head k ∈ {fusion, modalities} is trained alone for `gblend_epochs` epochs from
    the current weights and optimizer state (its own loss only), its train and V losses are measured
    before and after, and the model is put back. Those (M + 1)·n estimation epochs are extra work,
    counted in history.csv (`gblend_extra_epochs`) and in `seconds`."""
    name = "gblend"
    hyperparameters = GBLEND_KNOBS
    trains_heads = True
    modality_source = "heads"

    def setup(self, trainer) -> None:
        super().setup(trainer)
        inputs, labels = trainer.splits["train"]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.config.seed))
        n_holdout = max(1, round(self.config.gblend_holdout * len(labels)))
        held, kept = order[:n_holdout].to(labels.device), order[n_holdout:].to(labels.device)
        trainer.splits["gblend_holdout"] = ({m: x[held] for m, x in inputs.items()}, labels[held])
        trainer.splits["train"] = ({m: x[kept] for m, x in inputs.items()}, labels[kept])
        self.heads = ["fusion", *self.model.modalities]
        self.weights = {k: 1.0 / len(self.heads) for k in self.heads}
        self.extra_epochs = 0

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        return self.weights["fusion"] * loss_fn(out.fusion, labels) + sum(
            self.weights[m] * loss_fn(out.heads[m], labels) for m in self.model.modalities)

    def _losses(self, head: str) -> tuple[float, float]:
        key = "loss_fusion" if head == "fusion" else f"loss_head_{head}"
        return self.trainer.evaluate("train")[key], self.trainer.evaluate("gblend_holdout")[key]

    def start_epoch(self, epoch: int) -> None:
        due = epoch == 1 or (self.config.gblend_mode == "online" and (epoch - 1) % self.config.gblend_every == 0)
        if not due:
            return
        model_state = copy.deepcopy(self.model.state_dict())
        optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        before, after = {}, {}
        for head in self.heads:
            def head_loss(out, labels, head=head):
                return self.trainer.task.loss(out.fusion if head == "fusion" else out.heads[head], labels)
            before[head] = self._losses(head)
            for _ in range(self.config.gblend_epochs):
                self.trainer.train_epoch(epoch, loss_override=head_loss)
            after[head] = self._losses(head)
            self.extra_epochs += self.config.gblend_epochs
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(optimizer_state)
        self.weights = gblend_weights(before, after)

    def end_epoch(self, metrics: EpochMetrics) -> None:
        metrics.row.update({f"gblend_w_{k}": w for k, w in self.weights.items()})
        metrics.row["gblend_extra_epochs"] = self.extra_epochs

    def state_dict(self) -> dict:
        return {"weights": self.weights, "extra_epochs": self.extra_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.weights, self.extra_epochs = dict(state["weights"]), state["extra_epochs"]
