"""InfoReg — Huang, Wei, Yang & Hu, "Adaptive Unimodal Regulation for Balanced Multimodal Information
Acquisition", CVPR 2025. Official code: GeWu-Lab/InfoReg_CVPR2025, `main.py` (`train_epoch`, and the
trace lists in `main`), read at HEAD ea7b9d5 and the first upload 41d887f.

Trains L_AB plus each modality's unimodal loss. While a modality is still in its "prime learning
window" (its Fisher-information trace is still growing) and it is ahead of the other, its encoder is
pulled back towards its weights at the start of the epoch — a proximal term whose strength grows with
the score gap — so the modality behind can catch up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register, require_single_label

HISTORY = 10  # the official trace list starts with ten zeros and k compares ten-epoch means


def window_opening(traces: list[float]) -> float:
    """k for the coming epoch from the traces of the finished epochs, T_1 … T_e (`traces`, without the
    official list's ten leading zeros): k = 1 before any epoch, else (mean of the last ten − mean of
    the ten before the last) / mean of the last ten = (T_e − T_{e−10}) / Σ_{j=e−9}^{e} T_j, with T_j = 0
    for j ≤ 0. The window is open while k > τ: the information is still growing fast."""
    if not traces:
        return 1.0
    padded = [0.0] * HISTORY + list(traces)
    last, before = sum(padded[-HISTORY:]) / HISTORY, sum(padded[-HISTORY - 1:-1]) / HISTORY
    return (last - before) / last if last > 0 else 0.0


def regulation_strengths(score_a: torch.Tensor, score_b: torch.Tensor, open_a: bool, open_b: bool,
                         beta_a: float, beta_b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(β_A, β_B) as 0-d tensors from the batch scores s_m = Σ_i softmax(z_m)[i, y_i] (sums, so tanh
    mostly saturates): the modality ahead gets β0_m · exp(tanh(s_ahead − s_behind)) if its window is
    open, the other 0; both 0 on a tie."""
    gap = torch.tanh(score_a - score_b)
    strength_a = beta_a * torch.exp(gap) * (score_a > score_b) * open_a
    strength_b = beta_b * torch.exp(-gap) * (score_b > score_a) * open_b
    return strength_a, strength_b


@register
class InfoReg(Method):
    """Adaptive unimodal regulation. Loss L_AB + Σ_m CE(z_m, y), all weights 1 (z_m: the fusion head's
    parts W_m z_m + b/2, as the official HEAD; or trained unimodal heads, as its first upload —
    `inforeg_unimodal`). Every step, from the batch scores of z_A and z_B: the modality ahead, if its
    window is open, gets β = β0_m · exp(tanh(gap)) (`regulation_strengths`), and after backward every
    parameter θ of its encoder gets grad ← grad + β (θ − θ⁰), θ⁰ the encoder at the start of the epoch
    (the gradient of (β/2)‖θ − θ⁰‖²; heads untouched). The Fisher estimate F_l += grad_l² (of the final
    gradient) is summed over the epoch for every Conv2d/Linear weight of each encoder; the trace
    T = Σ_l mean(F_l) after each epoch decides the next epoch's window (`window_opening`, k > τ).
    Prediction: the fusion head.

    Defaults are the official HEAD's: τ = 0.05, β0 = 0.95 for the first modality and 0.1 for the second
    (its audio and visual; the dataset's first modality plays the role of its audio), parts as the
    unimodal logits, batch-summed scores, the epoch-start anchor. Choices and deviations, on purpose:
    - `inforeg_window` (default "each"): the official code opens one window, from the audio encoder's
      trace alone, for both modalities — which hard-codes "audio is the one to regulate" for its
      datasets. We give each modality the window of its own trace ("each"); for the first modality this
      is exactly the official rule, and "first" reproduces it for the second too.
    - Parameters and modules that get no gradient are skipped, in the proximal term and in the Fisher
      sum (the official loops would fail on their `None` gradients). A trace whose ten-epoch mean is 0
      gives k = 0 (the official code divides by zero).
    - Two modalities only: the rule compares two scores. Single-label only (the score is the
      probability of the one true class).
    - The package's optimizer (Adam by default; official: SGD lr 0.002, momentum 0.9, weight decay 1e-4,
      StepLR(30, 0.1)). With Adam the proximal gradient is renormalised with the rest, so β's scale
      means something else; it is searched.
    History columns per modality m: `inforeg_k_<m>` (the window value of the epoch), `inforeg_trace_<m>`
    (its Fisher trace), `inforeg_regulated_<m>` (share of steps with β_m > 0), `inforeg_beta_<m>`
    (mean β_m over the steps with β_m > 0).
    """
    name = "inforeg"
    description = ("while the leading modality is still in its early, information-rich phase (Fisher trace), its encoder"
                   " is pulled back to its epoch-start weights")
    papers = ("huang2025inforeg",)
    model_parts = ("encoders",)
    max_modalities = 2
    hyperparameters = (
        Hyperparameter("inforeg_beta_a", 0.95, "InfoReg's β0 of the first modality (the official audio's 0.95)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 0.95)",
                       search=SearchRange(0.05, 5.0, log=True, source="ours, around the official 0.95")),
        Hyperparameter("inforeg_beta_b", 0.1, "InfoReg's β0 of the second modality (the official visual's 0.1)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 0.1)",
                       search=SearchRange(0.01, 1.0, log=True, source="ours, around the official 0.1")),
        Hyperparameter("inforeg_threshold", 0.05, "InfoReg's window threshold τ: regulate while k > τ",
                       valid=lambda v: v >= 0, rule="≥ 0 (official HEAD 0.05; first upload 0.04)",
                       search=SearchRange(0.0, 0.2, source="ours, around the official 0.04–0.05")),
        Hyperparameter("inforeg_window", "each", "whose Fisher trace opens a modality's window: each (its own) "
                       "| first (the first modality's, for both: the official code)", choices=("each", "first")),
        Hyperparameter("inforeg_unimodal", "parts", "InfoReg's unimodal logits: parts (fusion-head slices, the "
                       "official HEAD) | heads (trained unimodal heads, as its first upload; only the heads "
                       "are taken from it)", choices=("parts", "heads")),
    )

    def __init__(self, config):
        super().__init__(config)
        self.trains_heads = config.inforeg_unimodal == "heads"
        self.modality_source = "heads" if self.trains_heads else "parts"

    def setup(self, context) -> None:
        super().setup(context)
        if len(self.context.modalities) != 2:
            raise UserError(f"inforeg compares two modalities' scores; got {list(self.context.modalities)}")
        require_single_label("inforeg", context, "scores the probability of one true class")
        self.params = {m: [p for p in self.model.encoders[m].parameters() if p.requires_grad]
                       for m in self.context.modalities}
        self.fisher_weights = {m: [mod.weight for mod in self.model.encoders[m].modules()
                                   if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.weight.requires_grad]
                               for m in self.context.modalities}
        self.traces = {m: [] for m in self.context.modalities}  # T of every finished epoch

    def start_epoch(self, epoch: int) -> None:
        self.anchor = {m: [p.detach().clone() for p in params] for m, params in self.params.items()}
        first = self.context.modalities[0]
        self.opening = {m: window_opening(self.traces[first if self.config.inforeg_window == "first" else m])
                        for m in self.context.modalities}
        zero = torch.zeros((), device=self.context.device)
        self.fisher = {m: [torch.zeros_like(w) for w in weights] for m, weights in self.fisher_weights.items()}
        self.regulated = {m: zero.clone() for m in self.context.modalities}
        self.beta_sum = {m: zero.clone() for m in self.context.modalities}
        self.steps = 0

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        logits = out.heads if self.trains_heads else out.parts
        a, b = self.context.modalities
        scores = {m: F.softmax(logits[m].detach(), 1).gather(1, labels[:, None]).sum() for m in (a, b)}
        tau = self.config.inforeg_threshold
        strength_a, strength_b = regulation_strengths(
            scores[a], scores[b], self.opening[a] > tau, self.opening[b] > tau,
            self.config.inforeg_beta_a, self.config.inforeg_beta_b)
        self.strengths = {a: strength_a, b: strength_b}
        return loss_fn(out.fusion, labels) + sum(loss_fn(logits[m], labels) for m in (a, b))

    @torch.no_grad()
    def after_backward(self, out, labels, epoch: int) -> None:
        for m, params in self.params.items():
            pulled = [(p, p0) for p, p0 in zip(params, self.anchor[m]) if p.grad is not None]
            if pulled:  # grad += β (θ − θ⁰), batched over the encoder's tensors
                pull = torch._foreach_sub([p for p, _ in pulled], [p0 for _, p0 in pulled])
                torch._foreach_mul_(pull, self.strengths[m])
                torch._foreach_add_([p.grad for p, _ in pulled], pull)
            for total, w in zip(self.fisher[m], self.fisher_weights[m]):
                if w.grad is not None:
                    total.addcmul_(w.grad, w.grad)
            self.regulated[m] += (self.strengths[m] > 0).float()
            self.beta_sum[m] += self.strengths[m]
        self.steps += 1

    def end_epoch(self, metrics: EpochMetrics) -> None:
        for m in self.context.modalities:
            trace = sum(f.mean() for f in self.fisher[m]).item() if self.fisher[m] else 0.0
            self.traces[m].append(trace)
            regulated = self.regulated[m].item()
            metrics.row[f"inforeg_k_{m}"] = self.opening[m]
            metrics.row[f"inforeg_trace_{m}"] = trace
            metrics.row[f"inforeg_regulated_{m}"] = regulated / max(self.steps, 1)
            metrics.row[f"inforeg_beta_{m}"] = self.beta_sum[m].item() / regulated if regulated else 0.0

    def state_dict(self) -> dict:
        return {"traces": self.traces}

    def load_state_dict(self, state: dict) -> None:
        self.traces = {m: list(v) for m, v in state["traces"].items()}
