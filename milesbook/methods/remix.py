"""Data Remixing — Ma, Chen & Deng, "Improving Multimodal Learning Balance and Sufficiency through Data
Remixing", ICML 2025 (arXiv 2506.11550). Official code: MatthewMaxy/Remix_ICML2025, `train.py` and
`models/models.py`, read at 80898aa.

After a warm-up, every epoch scores each training sample's unimodal predictions and gives the sample to
the modality whose prediction is closest to uniform (the one that has learnt it least); each modality
then trains on its own subset with the other modalities masked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .arl import zero_out_logits
from .base import Hyperparameter, Method, SearchRange, TrainingPass, register, require_single_label

MASKS = ("inputs", "features")


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) ‖ uniform) in bits per sample (N,) from logits (N, K): Σ_k p_k log2(p_k K),
    with p clipped to ≥ 1e-9 as officially (`train.py` l. 52-57)."""
    p = F.softmax(logits, 1).clamp(min=1e-9)
    return (p * torch.log2(p * logits.shape[1])).sum(1)


def remix_assignment(head_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each sample's modality (N,) as an index into `head_logits`' order: the modality whose unimodal
    prediction has the lowest KL to uniform; a tie goes to the later modality (officially to video, the
    second: `if KL_audio < KL_video` → audio, else video, l. 78-81)."""
    kl = torch.stack([kl_to_uniform(z) for z in head_logits.values()], 1)  # (N, M)
    last_minimum = kl.shape[1] - 1 - torch.argmin(kl.flip(1), dim=1)
    return last_minimum


@register
class Remix(Method):
    """Data Remixing on the joint-fusion model with its unimodal heads h_m (officially `head_audio`,
    `head_video`, separate from the fused head).

    - Warm-up, epochs 1…`remix_warmup`: L = CE(g(z), y) + α Σ_m CE(h_m(z_m), y), α = `remix_alpha` (the
      official α = β = 0.5, `train.py` l. 101-125, 43-44; warm-up while the 0-based `epoch < 10`, l. 243).
    - Every later epoch (`training_passes`): the model in eval mode scores every training row without
      noise (officially the training list with test-time transforms, l. 60-99, 220-225); each row goes to
      the modality of `remix_assignment` on the unimodal heads' logits. Then one shuffled pass per
      modality over its subset, the last modality first (officially the video subset, then the audio one:
      l. 135-150, 154-169), with every other modality masked: L = CE(g, y) + γ CE(h_m(z_m), y), γ =
      `remix_gamma` (official γ1 = γ2 = 1, l. 45-46). Each row is in one subset (a subset whose size is
      one more than a multiple of the batch size leaves one row out, as every pass). Any number of
      modalities (the paper's rule is written for K; the code handles two).
    - Prediction: the fusion head on every modality (l. 176-201).

    Masking (`remix_mask`; the tuned search draws it): the paper masks the other modalities' *inputs*
    ("inputs": each masked input is a zero tensor after normalization, so the masked encoder still runs
    in training mode — its BatchNorm statistics move towards those of zero inputs — and gets the
    gradient its zero-input output carries); the released code zeroes their pooled *features* in place
    (`models/models.py` l. 55-59: "features", our default), so the fused logits are W_m z_m + b and the
    masked encoder gets a gradient of exactly zero, not none (under Adam its momentum and the weight
    decay still move it; we give it that zero gradient too). The default is the code's, not the paper's,
    because the paper's, taken literally, undoes the method: on `digits-av` with BatchNorm encoders
    the fused test accuracy falls from 99.7–100 % after the warm-up to 10–17 % at the last epoch, and
    validation always chooses the last warm-up epoch (docs/deviations/remix-inputs; with features:
    docs/deviations/remix-features).

    Deviations, on purpose:
    - The epoch is selected on validation; the official script loads the test set as "val" and keeps
      the best test accuracy over all epochs (l. 221, 255).
    - The package's optimizer: Adam (betas 0.9, 0.999, as officially; official lr 5e-5 and weight decay
      1e-4 — `--weight-decay 1e-4` — with StepLR(30, 0.1) after each of 60 epochs, which we do not
      apply), at `--lr`; the package's encoders (official: ResNet-18 from scratch, 2 frames).
    - KL uses the data's class count (officially hard-coded 6, CREMA-D's).
    - `train_loss` of a remix epoch is that of the subset passes; its training accuracies are those of
      the masked inputs ("inputs") or of the unmasked model on each pass's batches ("features": only the
      loss is masked).
    History columns: `remix_share_<m>` (share of training rows assigned to m; 0 in the warm-up).
    Single-label data (KL of one class distribution).
    """
    name = "remix"
    description = "after a warm-up, each sample trains only the modality that has learnt it least, the others masked"
    papers = ("ma2025remix",)
    trains_heads = True
    modality_source = "heads"
    model_parts = ("fusion_head", "fusion_kind", "feature_dim")
    hyperparameters = (
        Hyperparameter("remix_warmup", 10, "Data Remixing's warm-up epochs (joint training with unimodal losses)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 10 of 60 epochs, run_train.sh)",
                       search=SearchRange(2, 15, source="ours, around the official 10 of 60 epochs (run_train.sh)")),
        Hyperparameter("remix_alpha", 0.5, "Data Remixing: weight of each unimodal loss in the warm-up (≥ 0)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 0.5)"),
        Hyperparameter("remix_gamma", 1.0, "Data Remixing: weight of the unimodal loss in each subset's pass (≥ 0)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 1)",
                       search=SearchRange(0.25, 4.0, log=True, source="ours, around the official 1 (train.py l. 45-46)")),
        Hyperparameter("remix_mask", "features", "Data Remixing masks the other modalities' features (the released "
                       "code) or their inputs (the paper)", choices=MASKS,
                       search=SearchRange(choices=MASKS, source="the paper's masking and the released code's")),
    )

    def needs(self) -> dict[str, str]:
        return {"training_rows": "it scores every training row each epoch and trains each modality on its own rows"}

    def setup(self, context) -> None:
        super().setup(context)
        if len(context.modalities) < 2:
            raise UserError("remix assigns each sample to one of several modalities; it needs at least two")
        require_single_label("remix", context, "scores one class distribution per sample")
        self.shares = {m: 0.0 for m in context.modalities}

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        """The warm-up loss."""
        alpha = self.config.remix_alpha
        return loss_fn(out.fusion, labels) + alpha * sum(loss_fn(h, labels) for h in out.heads.values())

    def training_passes(self, epoch: int) -> list[TrainingPass] | None:
        modalities = self.context.modalities
        if epoch <= self.config.remix_warmup:
            self.shares = {m: 0.0 for m in modalities}
            return None
        heads = self.context.training_outputs().heads
        assigned = remix_assignment({m: heads[m] for m in modalities})
        n = max(len(assigned), 1)
        passes = []
        for i, m in reversed(list(enumerate(modalities))):
            rows = torch.nonzero(assigned == i).flatten().cpu()
            self.shares[m] = len(rows) / n
            zeroed = tuple(k for k in modalities if k != m) if self.config.remix_mask == "inputs" else ()
            passes.append(TrainingPass(rows, self._subset_loss(m), zeroed))
        return passes

    def _subset_loss(self, keep: str):
        gamma, masked = self.config.remix_gamma, [k for k in self.context.modalities if k != keep]

        def loss(out, labels, loss_fn):
            fused = out.fusion
            if self.config.remix_mask == "features":
                # g([0; z_m; 0]) = W_m z_m + b; 0·Σz keeps the masked encoders in the graph with a zero gradient
                fused = zero_out_logits(self.model, out.features, keep) + sum(0.0 * out.features[k].sum() for k in masked)
            return loss_fn(fused, labels) + gamma * loss_fn(out.heads[keep], labels)
        return loss

    def end_epoch(self, metrics) -> None:
        for m, share in self.shares.items():
            metrics.row[f"remix_share_{m}"] = share
