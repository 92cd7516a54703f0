"""MLA — Zhang, Yoon, Bansal & Yao, "Multimodal Representation Learning by Alternating Unimodal
Adaptation", CVPR 2024. Official code: Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-
Adaptation, `main.py` (`train_epoch` with `--gs_flag`, `valid`, `calculate_gating_weights`) and
`utils/utils.py` (`GSPlugin`), read at HEAD ab6c184 (code last changed at 11ae1ee).

No fusion head is trained: one head shared by all modalities is applied to each encoder's features in
turn, and every mini-batch takes one optimizer step per modality. At test time the shared head's
per-modality logits are fused, weighted by how confident (low-entropy) each modality is.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models import FusionOutput
from .base import Hyperparameter, Method, SearchRange, register

PROJECTIONS = ("replace", "off", "add")
FUSIONS = ("entropy", "entropy-batch", "fixed")


def entropy_weights(logits: dict[str, torch.Tensor], per_sample: bool = True) -> dict[str, torch.Tensor]:
    """MLA's test-time weights from each modality's logits (N, K): w_m = exp(max_k e_k − e_m) / Σ_j
    exp(max_k e_k − e_j), e_m the entropy — so the more confident modality weighs more. `per_sample`:
    e_m(i) over classes for each sample, weights (N, 1) (the paper); else the official code's one
    entropy per modality of the softmax over the batch axis summed over the batch, weights 0-d (so they
    depend on which samples share a batch)."""
    entropies = {}
    for m, z in logits.items():
        if per_sample:
            p = F.softmax(z, dim=1)
            entropies[m] = -(p * F.log_softmax(z, dim=1)).sum(1, keepdim=True)
        else:
            p = F.softmax(z, dim=0)
            entropies[m] = -(p * F.log_softmax(z, dim=0)).sum()
    stacked = torch.stack(list(entropies.values()))
    weights = torch.softmax(-stacked, dim=0)  # = exp(max e − e_m) / Σ_j exp(max e − e_j)
    return dict(zip(entropies, weights))


def project_head_gradient(grad: torch.Tensor, projector: torch.Tensor, features: torch.Tensor,
                          alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of MLA's gradient modification (the official `GSPlugin.before_update`, an orthogonal-
    weight-modification projector). `grad` is the shared head's weight gradient (K, d), `projector`
    P (d, d), `features` the sub-step's encoder features (N, d), α the regulariser. With r the batch
    mean feature (1, d) and k = P rᵀ: P ← P − k kᵀ / (α + r k), then P ← P / ‖P‖_F; returns
    (grad Pᵀ, P). Directions the head has already seen are damped in later updates."""
    r = features.detach().mean(0, keepdim=True)
    k = projector @ r.t()
    projector = projector - (k @ k.t()) / (alpha + r @ k)
    projector = projector / torch.linalg.matrix_norm(projector)
    return grad @ projector.t(), projector


@register
class MLA(Method):
    """Multimodal Learning with Alternating unimodal adaptation. Each mini-batch: one forward pass of
    every encoder, then for each modality m in the dataset's order (the official code: audio, then
    visual) a sub-step — loss CE(h(z_m), y) through the shared head h, backward (reaching only encoder m
    and h), the head-gradient modification, an optimizer step. No multimodal loss; no loss weights.
    Prediction (`readout`): Σ_m w_m h(z_m) with the entropy weights of `entropy_weights` (the official
    `--dynamic` rule); modality m's accuracy is that of h(z_m) (the official `out_a`, `out_v`).

    The shared head is the model's fusion head: with `--fusion sum` it is exactly the official
    `fc_out` (Linear(d → K)); with `--fusion concat` it is the first d columns of the concatenation
    head, and the other columns are never used (MLA has no concatenation head, so both fusions train the
    same architecture and differ only in the head's initial scale).

    Choices and deviations, on purpose:
    - `mla_projection` (default "replace"): the released code never applies its projection — at HEAD
      the parameter-name test accepts only "module.weight", and the bare `nn.Linear` it is given names
      its weight "weight"; at the earlier commit 4735bbc (whose test also accepted "weight") the plugin
      is passed as the class `GSPlugin`, not an instance, so the first MLA step would fail. We follow
      the paper, which presents the modification as part of MLA; "off" is the released behaviour and
      "add" BalanceBenchmark's (G ← G + G Pᵀ). As in the official code, P lives for the whole run,
      α = 0.1^(1 + b/B) for the b-th of B batches of the epoch (B counts the loop's batches: one
      fewer than the official ⌈n/64⌉ when a lone last sample is dropped), and the very first sub-step
      of training is not modified. Differences in the update itself: P ← P − k kᵀ / (α + r k) with the
      scalar r k, the orthogonal-weight-modification form; the official line divides element-wise by
      α + k r, a d × d outer product (`torch.mm(k, r)`) — never executed, see above. r is detached (the
      official code keeps its autograd history). Only the weight gradient is projected.
    - `mla_fusion` (default "entropy"): the paper's per-sample entropy over classes. "entropy-batch" is
      the official code's (softmax over the batch axis, one weight per modality per evaluation batch of
      `--eval-batch-size`, and of each training batch for the training accuracy); "fixed" is its
      non-dynamic rule, `mla_first_weight` (official 0.55) for the first modality and the rest shared
      equally by the others (with three modalities the official code uses 0.35 / 0.25 / 0.4 instead).
      Entropies use `log_softmax` (the official `log(softmax)` gives NaN on a saturated softmax).
    - Gradients are set to None between sub-steps, so each sub-step moves only the active encoder and
      the head (under torch 1.8.1 the official `zero_grad` left zero tensors, and SGD's weight decay and
      momentum then also moved the audio encoder during the visual sub-step).
    - The package's optimizer (Adam by default; official: SGD lr 1e-3, momentum 0.9, weight decay 1e-4,
      StepLR(70, 0.1)) and the package's encoders (official: ResNet-18 with its own `weight_init`).
    - `train_loss` is Σ_m CE(h(z_m), y) (the official log is 0.55 L_a + 0.45 L_v).
    - Any number of modalities (the official code also runs three: audio, visual, text). Multi-label
      data only with the fixed fusion (the entropy is that of one class distribution).
    """
    name = "mla"
    description = ("no fusion head: one shared head, one optimizer step per modality in turn, the head's gradient "
                   "projected; confidence-weighted fusion at test time")
    papers = ("zhang2024mla",)
    model_parts = ("fusion_head", "feature_dim")
    steps_in_loss = True
    trains_heads = True       # the shared head's per-modality logits are trained and reach the encoders
    modality_source = "heads"
    hyperparameters = (
        Hyperparameter("mla_projection", "replace", "MLA's head-gradient modification: replace G by G Pᵀ (the "
                       "paper), off (the released code, where it never runs), or add G Pᵀ (BalanceBenchmark)",
                       choices=PROJECTIONS,
                       search=SearchRange(choices=PROJECTIONS, source="the three published variants")),
        Hyperparameter("mla_fusion", "entropy", "MLA's test-time fusion of the shared head's logits: entropy "
                       "(per sample, the paper), entropy-batch (the official code), fixed (weights)",
                       choices=FUSIONS),
        Hyperparameter("mla_first_weight", 0.55, "with --mla-fusion fixed: the first modality's weight",
                       valid=lambda v: 0 < v < 1, rule="in (0, 1) (official 0.55)"),
    )

    def __init__(self, config):
        super().__init__(config)
        self.inference = {"entropy": "entropy-weighted shared-head logits (per sample)",
                          "entropy-batch": "entropy-weighted shared-head logits (per evaluation batch)",
                          "fixed": "fixed-weight shared-head logits"}[config.mla_fusion]

    def setup(self, context) -> None:
        super().setup(context)
        modalities = self.context.modalities
        if len(modalities) < 2:
            raise UserError("mla alternates between modalities; it needs at least two")
        if context.task.name == "multilabel" and self.config.mla_fusion != "fixed":
            raise UserError(f"mla's {self.config.mla_fusion} fusion weighs modalities by the entropy of one class "
                            f"distribution and needs single-label data; {context.data_name} is multi-label "
                            "(--mla-fusion fixed works with it)")
        d = self.model.feature_dim
        self.projector = torch.eye(d, device=context.device)
        self.substeps = 0  # the official `exp_count`: sub-steps taken in the whole run
        self.batches = context.batches_per_epoch()
        self.batch = 0
        first = self.config.mla_first_weight
        rest = (1 - first) / (len(modalities) - 1)
        self.fixed = {m: first if i == 0 else rest for i, m in enumerate(modalities)}

    def shared_head(self, features: torch.Tensor) -> torch.Tensor:
        """h(z) = W z + b for features (N, d) → logits (N, K)."""
        head = self.model.fusion_head
        return F.linear(features, head.weight[:, :self.model.feature_dim], head.bias)

    def needs(self) -> dict[str, str]:
        return {"batches_per_epoch": "its projection strength follows the batch's place in the epoch "
                                     "(pass train_loader=, whose len() is the epoch's batches)"}

    def start_epoch(self, epoch: int) -> None:
        self.batch = 0

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        # Every sub-step but the last steps the optimizer here; the loop's own step is the last one.
        *earlier, last = self.context.modalities
        done = []
        for m in earlier:
            sub = loss_fn(self.shared_head(out.features[m]), labels)
            self.optimizer.zero_grad(set_to_none=True)
            sub.backward()
            self._modify_head_gradient(out.features[m])
            self.optimizer.step()
            done.append(sub.detach())
        self.optimizer.zero_grad(set_to_none=True)
        # The head has just moved: the last modality's logits use its new weights, as officially.
        return loss_fn(self.shared_head(out.features[last]), labels) + sum(done)

    def after_backward(self, out, labels, epoch: int) -> None:
        self._modify_head_gradient(out.features[self.context.modalities[-1]])
        self.batch += 1

    def _modify_head_gradient(self, features: torch.Tensor) -> None:
        mode, first = self.config.mla_projection, self.substeps == 0
        self.substeps += 1
        if mode == "off" or first:
            return
        alpha = 0.1 ** (1 + self.batch / self.batches)
        weight = self.model.fusion_head.weight
        d = self.model.feature_dim
        grad = weight.grad[:, :d]
        projected, self.projector = project_head_gradient(grad, self.projector, features, alpha)
        weight.grad[:, :d] = projected if mode == "replace" else grad + projected

    @torch.no_grad()
    def readout(self, out) -> FusionOutput:
        heads = {m: self.shared_head(z) for m, z in out.features.items()}
        if self.config.mla_fusion == "fixed":
            weights = self.fixed
        else:
            weights = entropy_weights(heads, per_sample=self.config.mla_fusion == "entropy")
        parts = {m: weights[m] * z for m, z in heads.items()}  # Σ_m parts = the fused logits
        return FusionOutput(sum(parts.values()), heads, parts, out.features)

    def state_dict(self) -> dict:
        return {"projector": self.projector.cpu(), "substeps": self.substeps}

    def load_state_dict(self, state: dict) -> None:
        self.projector = state["projector"].to(self.context.device)
        self.substeps = state["substeps"]
