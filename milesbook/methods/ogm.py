"""OGM and OGM-GE — Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient
Modulation", CVPR 2022.

Official code: GeWu-Lab/OGM-GE_CVPR2022. Gradient modulation every step (`after_backward`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register


def ogm_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A modality's confidence in the right answers over a batch, as a 0-d tensor.

    Single-label (`labels` (N,) class ids), OGM's own: s = Σ_i softmax(ŷ)[i, y_i].
    Multi-label (`labels` (N, C) 0/1) — OGM defines no score; our reading: s = Σ_i Σ_{c: y_ic = 1}
    sigmoid(ŷ)[i, c], the probability each true label gets, the direct analogue of the softmax
    probability of the true class. The negatives are left out on purpose: with 23 genres and about
    two true ones per movie, the easy "not this genre" decisions would otherwise dominate the score
    and make both modalities look alike."""
    if labels.dim() == 2:
        return (torch.sigmoid(logits) * labels).sum()
    return F.softmax(logits, 1).gather(1, labels[:, None]).sum()


def ogm_coefficients(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor,
                     alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OGM's modulation coefficients (k_A, k_B) for one mini-batch, as 0-d tensors (no host sync).

    s_m = `ogm_score(ŷ_m, y)`, ρ = s_A / s_B. If ρ > 1 (A dominates) k_A = 1 − tanh(α·ρ) and
    k_B = 1; otherwise k_B = 1 − tanh(α/ρ) and k_A = 1 (so at ρ = 1 exactly, B is the one damped, as
    in the official code). A tiny ε in both scores keeps ρ finite on a batch with no true labels."""
    eps = 1e-8
    ratio = (ogm_score(logits_a, labels) + eps) / (ogm_score(logits_b, labels) + eps)
    one = torch.ones_like(ratio)
    k_a = torch.where(ratio > 1, 1 - torch.tanh(alpha * ratio), one)
    k_b = torch.where(ratio > 1, one, 1 - torch.tanh(alpha / ratio))
    return k_a, k_b



def ogm_coefficients_many(logits: dict[str, torch.Tensor], labels: torch.Tensor,
                          alpha: float) -> dict[str, torch.Tensor]:
    """OGM for N ≥ 3 modalities (our extension, as the OGM-GE maintainers suggested in their issue #16):
    each modality's score against the mean of the others', ρ_m = s_m / mean_{k≠m} s_k, and
    k_m = 1 − tanh(α·ρ_m) where ρ_m > 1, else 1 — every modality ahead of the others' average is damped.
    At N = 2 this is `ogm_coefficients` except on an exact tie (the official code damps B there)."""
    eps = 1e-8
    scores = {m: ogm_score(z, labels) + eps for m, z in logits.items()}
    total = sum(scores.values())
    coefficients = {}
    for m, score in scores.items():
        ratio = score / ((total - score) / (len(scores) - 1))
        coefficients[m] = torch.where(ratio > 1, 1 - torch.tanh(alpha * ratio), torch.ones_like(ratio))
    return coefficients


OGM_KNOBS = (
    Hyperparameter("ogm_alpha", 0.5, "OGM/OGM-GE modulation strength α > 0",
                   valid=lambda v: v > 0, rule="> 0 (the OGM paper uses 0.1–1.0)",
                   search=SearchRange(0.1, 1.0, source="OGM-GE paper and official README: α from 0.1 "
                                                        "(VGGSound) to 0.8 (CREMA-D)")),
    Hyperparameter("ogm_start", 1, "first epoch with modulation (inclusive, counted from 1)",
                   valid=lambda v: v >= 1, rule="≥ 1"),
    # The official window is `modulation_starts <= epoch <= modulation_ends` over epochs counted from 0
    # with defaults 0 and 50 (GeWu-Lab/OGM-GE_CVPR2022 main.py l. 41-42, 132): its first 51 epochs.
    Hyperparameter("ogm_end", 51, "last epoch with modulation (inclusive, counted from 1; 51 = the official "
                   "default window, its epochs 0-50)",
                   valid=lambda v: v >= 1, rule="≥ 1"),
    Hyperparameter("ogm_params", "weights", "weights (every ≥2-D encoder tensor) | conv (4-D only, official)",
                   choices=("weights", "conv")),
    Hyperparameter("ogm_source", "parts", "parts (L_AB only, fusion-head parts; official) | heads (Eq. 3, "
                   "trained heads)", choices=("parts", "heads")),
)

@register
class OGM(Method):
    """On-the-fly Gradient Modulation (OGM; `ogm-ge` adds Generalization Enhancement).

    Every step inside the epoch window [`ogm_start`, `ogm_end`] (epochs counted from 1, both
    inclusive: 1–51 by default, the official 0–50), after backward and before the optimizer step, the
    gradients of each modality's encoder are multiplied by its coefficient (`ogm_coefficients`).
    Choices, documented:
    - scores come from the fusion head's per-modality parts W_m z_m + b/M and the loss is L_AB only,
      as the official code (`ogm_source="parts"`); `ogm_source="heads"` trains Eq. 3 and scores the
      trained unimodal heads instead;
    - the official code modulates only 4-D (convolution) weights; we modulate every encoder
      parameter with two or more dimensions (conv and linear weights, as the BalanceMM toolkit), since
      our encoders also have linear layers; `ogm_params="conv"` restricts it to the official set.
    - OGM-GE: each modulated gradient g becomes k·g + ε, ε ~ N(0, std(g)²) with the std of the
      unmodulated gradient, for both modalities while modulation is active (official code).
    - More than two modalities (ours): each modality's score against the mean of the others'
      (`ogm_coefficients_many`); two keep the official rule.
    - Sum fusion. The official `SumFusion` is two linear layers added, fc_a(z_A) + fc_v(z_V), each with
      its own bias, and its training-time scores use each layer with its whole bias — in weights that is
      a concatenation head. Our `--fusion sum` is the MILES paper's sum: one linear layer shared by
      z_A + z_B, so a part is W z_m + b/2 (one W for both modalities, half the bias each). Under
      `--fusion concat` our parts W_m z_m + b/2 are the official concat fusion's exactly; the official
      "sum" is closest to our concat (it differs only in splitting the bias into two trained halves).
      That closeness rests on the official initialisation: `weight_init` zeroes every Linear bias
      (`utils/utils.py` l. 15-18), and the two biases get the same gradient every step, so they stay
      equal (b_A = b_V = b/2) for the whole run and each training-time score carries half the fused
      bias, as our parts do. From a nonzero init they would keep their initial difference, and the
      scores would not be our parts. (The fused bias b_A + b_V still moves twice as fast as one bias.)
      What the choice of fusion changes for OGM here is measured in docs/methods.md ("Where
      methods deviate").
    Beware of Adam (the MILES paper's optimizer, our default): it divides each gradient by a running
    estimate of its own scale, so a coefficient that stays roughly constant is almost cancelled, and
    OGM then trains nearly like vanilla. The official code uses SGD with momentum 0.9, weight decay 1e-4
    and StepLR(70, 0.1) (`main.py` l. 246-247, l. 38): `--optimizer sgd --weight-decay 1e-4` is that
    optimizer (without the step decay, which acts only from epoch 70).
    """
    name = "ogm"
    description = ("every step, the dominant modality's encoder gradients are shrunk by how far its confidence leads the"
                   " other's")
    papers = ("peng2022ogmge",)
    model_parts = ("encoders",)
    hyperparameters = OGM_KNOBS
    noise = False

    @classmethod
    def check_options(cls, config) -> None:
        if config.ogm_start > config.ogm_end:
            raise UserError(f"--ogm-start/--ogm-end must be 1 ≤ start ≤ end, got {(config.ogm_start, config.ogm_end)}")

    def __init__(self, config):
        super().__init__(config)
        self.trains_heads = config.ogm_source == "heads"
        self.modality_source = "heads" if self.trains_heads else "parts"

    def setup(self, context) -> None:
        super().setup(context)
        min_dims = 4 if self.config.ogm_params == "conv" else 2
        self.params = {m: [p for p in self.model.encoders[m].parameters() if p.dim() >= min_dims]
                       for m in self.context.modalities}
        self._reset_log()

    def _reset_log(self):
        self.k_sum = {m: torch.zeros((), device=self.context.device) for m in self.context.modalities}
        self.steps = 0

    def after_backward(self, out, labels, epoch: int) -> None:
        if not (self.config.ogm_start <= epoch <= self.config.ogm_end):
            return
        logits = out.heads if self.trains_heads else out.parts
        modalities = self.context.modalities
        with torch.no_grad():
            if len(modalities) == 2:
                a, b = modalities
                coefficients = dict(zip((a, b), ogm_coefficients(logits[a].detach(), logits[b].detach(), labels,
                                                                 self.config.ogm_alpha)))
            else:
                coefficients = ogm_coefficients_many({m: logits[m].detach() for m in modalities}, labels,
                                                     self.config.ogm_alpha)
            for m, k in coefficients.items():
                for p in self.params[m]:
                    if p.grad is None:
                        continue
                    if self.noise:
                        std = p.grad.std()
                        p.grad.mul_(k).add_(torch.randn_like(p.grad) * std)
                    else:
                        p.grad.mul_(k)
                self.k_sum[m] += k
        self.steps += 1

    def end_epoch(self, metrics: EpochMetrics) -> None:
        for m, total in self.k_sum.items():  # the mean coefficient of the epoch (1.0 outside the window)
            metrics.row[f"ogm_k_{m}"] = total.item() / self.steps if self.steps else 1.0
        self._reset_log()


@register
class OGMGE(OGM):
    __doc__ = OGM.__doc__
    name = "ogm-ge"
    description = ("OGM, plus Gaussian noise on the modulated gradients scaled to their own spread (generalization "
                   "enhancement)")
    papers = ("peng2022ogmge",)
    noise = True
