"""MSES — Fujimori et al., "Modality-specific Learning Rate Control for Multimodal
Classification", ACPR 2019.

Per-modality early stopping (`end_epoch`, `should_stop`); no public code exists.
"""
from __future__ import annotations

import copy
import math

import torch

from .base import Aux, EpochMetrics, Hyperparameter, SearchRange, register

PATIENCE = Hyperparameter("mses_patience", 5, "MSES patience (epochs, ≥ 1; the paper uses 3–10)",
                          valid=lambda v: v >= 1, rule="≥ 1 epoch (the MSES paper uses 3–10)",
                          search=SearchRange(3, 10, source="MSES paper: patience 3–10"))
RESTORE = Hyperparameter("mses_restore", True, "MSES: keep a stopped modality's last weights instead of "
                         "restoring its best")


@register
class MSES(Aux):
    """Modality-specific early stopping, re-implemented from the paper's description (no public code).

    Trains Eq. 3 at the global rate. Each modality's head is tracked on the validation metric
    (accuracy; micro-F1 on multi-label data); once it
    has not improved for `mses_patience` epochs that modality stops: its encoder's and head's rate
    becomes 0 for good, its BatchNorm statistics are frozen, and (with `mses_restore`, the default)
    its best weights are put back. Training ends when every modality has stopped and the fusion
    accuracy has not improved for `mses_patience` epochs either (history.csv is then shorter than
    `--epochs`)."""
    name = "mses"
    description = ("Eq. 3 with early stopping per modality: an encoder whose head stops improving on validation is "
                   "frozen at its best weights")
    papers = ("fujimori2019mses",)
    model_parts = ("encoders", "heads")
    hyperparameters = (PATIENCE, RESTORE)

    def setup(self, context) -> None:
        super().setup(context)
        self.tracked = ["fusion", *self.context.modalities]
        self.best = {k: -math.inf for k in self.tracked}
        self.waited = {k: 0 for k in self.tracked}
        self.stopped_at = {m: 0 for m in self.context.modalities}  # epoch it stopped; 0 = still training
        self.best_weights = {}

    def _modules(self, m: str):
        return [self.model.encoders[m], self.model.heads[m]]

    def _freeze(self, m: str) -> None:
        self.group(m)["lr"] = 0.0
        for module in self.model.encoders[m].modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0  # running statistics stay as they were at the stop

    def end_epoch(self, metrics: EpochMetrics) -> None:
        values = metrics.validation
        for k in self.tracked:
            if k != "fusion" and self.stopped_at[k]:
                continue
            if values[k] > self.best[k]:
                self.best[k], self.waited[k] = values[k], 0
                if k != "fusion" and self.config.mses_restore:
                    self.best_weights[k] = [copy.deepcopy(mod.state_dict()) for mod in self._modules(k)]
            else:
                self.waited[k] += 1
            if k != "fusion" and self.waited[k] >= self.config.mses_patience:
                self.stopped_at[k] = metrics.epoch
                if self.config.mses_restore and k in self.best_weights:
                    for module, state in zip(self._modules(k), self.best_weights.pop(k)):
                        module.load_state_dict(state)
                self._freeze(k)
        metrics.row.update({f"mses_stopped_{m}": self.stopped_at[m] for m in self.context.modalities})

    def should_stop(self) -> bool:
        return all(self.stopped_at.values()) and self.waited["fusion"] >= self.config.mses_patience

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "waited", "stopped_at", "best_weights")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, copy.deepcopy(value))
        for m, epoch in self.stopped_at.items():
            if epoch:
                self._freeze(m)  # momentum is not part of a state_dict
