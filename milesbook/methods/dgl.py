"""DGL — Wei, Luo & Luo, "Boosting Multimodal Learning via Disentangled Gradient Learning", ICCV 2025.
Official code: shicaiwei123/ICCV2025-GDL (the repository is named GDL), `main_dgl.py`,
`models/fusion_modules.py` (`ConcatFusion_DGL`) and `cramed_dgl.sh`, read at b72a55f.

The fused prediction is made from detached encoder features, so the multimodal loss trains the fusion
head alone; each encoder is trained only by its own unimodal loss, read through the fusion head with
the other modalities' features set to zero, and that unimodal gradient never reaches the head.
"""
from __future__ import annotations

import torch

from .arl import zero_out_logits
from .base import Hyperparameter, Method, SearchRange, register


def fused_logits(model, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """The fusion head on the given features (N, K): concatenated, or summed with a sum fusion."""
    joined = torch.cat(list(features.values()), 1) if model.fusion_kind == "concat" else sum(features.values())
    return model.fusion_head(joined)


@register
class DGL(Method):
    """Disentangled Gradient Learning: L = CE(g([sg z_1; …; sg z_M]), y) + α Σ_m CE(sg(g)([0; z_m; 0]), y),
    g the fusion head and sg a stop-gradient. The first term trains g alone (the fused logits are made
    from detached features); the second trains each encoder through its zero-out logits
    (`arl.zero_out_logits`) with g held constant. Prediction: the fusion head on both modalities.

    The official step (`main_dgl.py` l. 100-154 at b72a55f) reaches the same gradients in two backward
    passes: `(α·(CE(p_a) + CE(p_v))).backward(retain_graph=True)`, then `.grad = None` on every
    parameter whose name's second component contains "fusion" (l. 114-119; the `module.` prefix of
    DataParallel), then `CE(p_f).backward()` on the detached features (`ConcatFusion_DGL`,
    `models/fusion_modules.py` l. 45-59); then the gradient norm is clipped at 40 and SGD steps. Our one
    loss with the head's weights detached in the unimodal term gives each parameter the same gradient
    (tested), in one backward pass.

    Defaults: α = 4 and the clip 40 (`cramed_dgl.sh` l. 8-9: `--alpha 4`, lr 0.002; a second line uses
    α = 5). The paper's equation has the same two terms. Deviations, on purpose:
    - The package's optimizer: Adam (betas 0.9, 0.999) unless `--optimizer sgd` (momentum 0.9; official:
      SGD lr 0.002, momentum 0.9, weight decay 1e-4 — `--weight-decay 1e-4` — and MultiStepLR([70], 0.1),
      which we do not apply), at `--lr`; the package's encoders (official: ResNet-18 from scratch).
    - The epoch is selected on validation; the official script keeps the best *test* accuracy (l. 349).
    - Modality m's reading is the fusion head's part W_m z_m + b/M (the package's "parts"); the official
      unimodal accuracy is that of W_m z_m + b: they differ only by the bias share (M − 1) b / M.
    - Any number of modalities: Σ_m over every modality's zero-out logits (the paper reports a
      three-modality result; that code is not released). The official step also appends each step's
      gradient norms to a CSV file; we do not.
    History column: `dgl_unimodal_loss` (the epoch's mean Σ_m CE of the zero-out logits).
    """
    name = "dgl"
    description = ("the fused loss trains only the fusion head; each encoder learns only from its own zero-out unimodal "
                   "loss through the head held fixed")
    papers = ("wei2025dgl",)
    model_parts = ("fusion_head", "fusion_kind", "feature_dim")
    hyperparameters = (
        Hyperparameter("dgl_alpha", 4.0, "DGL's weight α of the encoders' unimodal losses (> 0)",
                       valid=lambda v: v > 0, rule="> 0 (official 4, cramed_dgl.sh; a second run uses 5)",
                       search=SearchRange(1.0, 8.0, log=True,
                                          source="ours, around the official 4 and 5 (cramed_dgl.sh l. 8-9)")),
        Hyperparameter("dgl_clip", 40.0, "DGL: clip the global gradient norm at this value (0: no clipping)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 40, main_dgl.py)"),
    )

    def setup(self, context) -> None:
        super().setup(context)
        self._reset_log()

    def _reset_log(self) -> None:
        self.unimodal_sum, self.steps = torch.zeros((), device=self.context.device), 0

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        detached = {m: z.detach() for m, z in out.features.items()}
        fusion_loss = loss_fn(fused_logits(self.model, detached), labels)
        unimodal = sum(loss_fn(zero_out_logits(self.model, out.features, m, detach_head=True), labels)
                       for m in out.features)
        self.unimodal_sum += unimodal.detach()
        self.steps += 1
        return fusion_loss + self.config.dgl_alpha * unimodal

    def after_backward(self, out, labels, epoch: int) -> None:
        if self.config.dgl_clip > 0:
            self.clip_gradients(self.config.dgl_clip)

    def end_epoch(self, metrics) -> None:
        metrics.row["dgl_unimodal_loss"] = self.unimodal_sum.item() / self.steps if self.steps else 0.0
        self._reset_log()
