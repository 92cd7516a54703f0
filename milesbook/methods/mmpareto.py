"""MMPareto — Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance",
ICML 2024. Official code: GeWu-Lab/MMPareto_ICML2024, `code/MMPareto.py` and `code/min_norm_solvers.py`
(read at commit cc923ec). Trains Eq. 3's losses; on each encoder, the multimodal and the unimodal
gradient are combined every step along a common (Pareto) direction with an enlarged magnitude.
"""
from __future__ import annotations

import torch

from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register

EPS = 1e-12  # keeps a norm ratio finite when a gradient is exactly zero (the official code has none)


def pareto_weights(multimodal: torch.Tensor, unimodal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_mm, α_u) for one encoder's flattened gradients g_mm, g_u (each (P,)), as 0-d tensors.

    No conflict (cosine > 0, strictly): 0.5 and 0.5. Otherwise the two-vector min-norm point of the
    official `MinNormSolver._min_norm_element_from2`: α_mm = (‖g_u‖² − ⟨g_mm, g_u⟩) / ‖g_mm − g_u‖²,
    except 0.999 when ⟨g_mm, g_u⟩ ≥ ‖g_mm‖² and then 0.001 when ⟨g_mm, g_u⟩ ≥ ‖g_u‖² (checked in that
    order). α_u = 1 − α_mm."""
    dot = multimodal @ unimodal
    mm, uu = multimodal @ multimodal, unimodal @ unimodal
    cosine = dot / (mm.sqrt() * uu.sqrt() + EPS)
    distance = mm + uu - 2 * dot  # ‖g_mm − g_u‖²; zero only when the two are equal (then they agree)
    min_norm = torch.where(distance > 0, (uu - dot) / torch.where(distance > 0, distance, torch.ones_like(distance)),
                           torch.full_like(dot, 0.5))
    min_norm = torch.where(dot >= uu, torch.full_like(min_norm, 0.001), min_norm)
    min_norm = torch.where(dot >= mm, torch.full_like(min_norm, 0.999), min_norm)
    alpha_mm = torch.where(cosine > 0, torch.full_like(min_norm, 0.5), min_norm)
    return alpha_mm, 1 - alpha_mm


def pareto_gradient(multimodal: torch.Tensor, unimodal: torch.Tensor, alpha_mm: torch.Tensor,
                    alpha_u: torch.Tensor, gamma: float) -> torch.Tensor:
    """One encoder tensor's new gradient: h = 2(α_mm g_mm + α_u g_u), rescaled to the norm of the plain
    sum s = g_mm + g_u when that is larger, times γ — so its norm is γ·max(‖s‖, ‖h‖) (per tensor, as
    the official code)."""
    combined = 2 * (alpha_mm * multimodal + alpha_u * unimodal)
    ratio = (multimodal + unimodal).norm() / (combined.norm() + EPS)
    return gamma * torch.where(ratio > 1, ratio, torch.ones_like(ratio)) * combined


@register
class MMPareto(Method):
    """MMPareto: Eq. 3 (L_AB + Σ_m L_m, trained unimodal heads), and on every step each encoder m gets
    the Pareto combination of g_mm = ∇L_AB and g_u = ∇L_m instead of their sum (`pareto_weights` over
    the whole encoder's flattened gradient, `pareto_gradient` per tensor). Heads keep their plain
    gradients. Prediction: the fusion head, as the official code.

    The two gradients per encoder come from `torch.autograd.grad` in `loss` (one extra backward pass
    for ∇L_AB and one per modality for ∇L_m; the official code runs one per loss); `after_backward`
    overwrites the encoder gradients. Every encoder parameter takes part, BatchNorm's affine ones
    included (the official code selects by name: all of an encoder's parameters). It is defined per
    encoder, so it runs unchanged with N > 2 modalities, and with both fusions.

    Deviations, on purpose:
    - γ (`mmpareto_gamma`) is a knob (the official code hard-codes 1.5). Note that γ > 1 also applies
      when the gradients do not conflict, i.e. the encoders train at a γ× larger step than the heads;
      with Adam (our default; the official code uses SGD with lr 0.002) a constant factor is mostly
      cancelled, and only the direction change survives. `--optimizer sgd` comes closest to the
      official setting (SGD, lr 0.002, momentum 0.9, weight decay 1e-4; we have no weight decay).
    - A tiny ε in the norm ratio and the cosine, and equal weights when g_mm = g_u (the official code
      divides by zero on an all-zero gradient).
    - The official code's inner products also count the "concat" copy of each gradient, which doubles
      each of them; the weights are ratios, so the factor cancels and we leave it out.
    - BalanceBenchmark's MMPareto trainer is not followed: it reads the gradients after summing all
      losses, so its cosine is always 1.
    History columns per modality m: `mmpareto_cos_<m>` (the epoch's mean cosine between g_mm and g_u)
    and `mmpareto_conflict_<m>` (the share of steps with cosine ≤ 0, where the min-norm weights apply).
    """
    name = "mmpareto"
    description = ("Eq. 3, each encoder's multimodal and unimodal gradients combined along a common Pareto direction, "
                   "then enlarged")
    papers = ("wei2024mmpareto",)
    model_parts = ("encoders",)
    trains_heads = True
    modality_source = "heads"
    hyperparameters = (
        Hyperparameter("mmpareto_gamma", 1.5, "MMPareto's magnitude factor γ on the encoders' combined gradient (> 0)",
                       valid=lambda v: v > 0, rule="> 0 (the official code uses 1.5)",
                       search=SearchRange(1.0, 2.0, source="ours, around the official code's fixed 1.5")),
    )

    def setup(self, context) -> None:
        super().setup(context)
        self.params = {m: [p for p in self.model.encoders[m].parameters() if p.requires_grad]
                       for m in self.context.modalities}
        self._reset_log()

    def _reset_log(self) -> None:
        zero = torch.zeros((), device=self.context.device)
        self.cosine_sum = {m: zero.clone() for m in self.context.modalities}
        self.conflicts = {m: zero.clone() for m in self.context.modalities}
        self.steps = 0

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        multimodal = loss_fn(out.fusion, labels)
        unimodal = {m: loss_fn(h, labels) for m, h in out.heads.items()}
        # ∇L_AB for every encoder in one pass, then each encoder's ∇L_m (the official code: one
        # retain_graph backward per loss); a parameter no loss reaches keeps no gradient.
        every = [p for params in self.params.values() for p in params]
        g_mm = iter(torch.autograd.grad(multimodal, every, retain_graph=True, allow_unused=True))
        self.gradients = {}
        for m, params in self.params.items():
            g_u = torch.autograd.grad(unimodal[m], params, retain_graph=True, allow_unused=True)
            self.gradients[m] = [(next(g_mm), b) for b in g_u]
        return multimodal + sum(unimodal.values())

    @torch.no_grad()
    def after_backward(self, out, labels, epoch: int) -> None:
        for m, pairs in self.gradients.items():
            pairs = [(p, a, b) for p, (a, b) in zip(self.params[m], pairs) if a is not None or b is not None]
            pairs = [(p, torch.zeros_like(p) if a is None else a, torch.zeros_like(p) if b is None else b)
                     for p, a, b in pairs]
            flat_mm = torch.cat([a.flatten() for _, a, _ in pairs])
            flat_u = torch.cat([b.flatten() for _, _, b in pairs])
            alpha_mm, alpha_u = pareto_weights(flat_mm, flat_u)
            for p, a, b in pairs:
                p.grad = pareto_gradient(a, b, alpha_mm, alpha_u, self.config.mmpareto_gamma)
            cosine = (flat_mm @ flat_u) / (flat_mm.norm() * flat_u.norm() + EPS)
            self.cosine_sum[m] += cosine
            self.conflicts[m] += (cosine <= 0).float()
        self.gradients = {}
        self.steps += 1

    def end_epoch(self, metrics: EpochMetrics) -> None:
        for m in self.context.modalities:
            metrics.row[f"mmpareto_cos_{m}"] = self.cosine_sum[m].item() / max(self.steps, 1)
            metrics.row[f"mmpareto_conflict_{m}"] = self.conflicts[m].item() / max(self.steps, 1)
        self._reset_log()
