"""ARL — Wei, Luo & Luo, "Improving Multimodal Learning via Imbalanced Learning" (Asymmetric
Representation Learning), ICCV 2025. Official code: shicaiwei123/ICCV2025-ARL, `main_arl_variance.py`,
`models/basic_model.py`, `models/backbone.py` and `cramed_arl.sh`, read at 358af4f.

Balance is not the goal: each encoder's gradient is scaled by 1 + a_m, with asymmetric coefficients a_m
from how confident and how right each modality is, and unimodal losses through the shared fusion head
(weighted by γ after a warm-up) are added to the multimodal loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import Hyperparameter, Method, SearchRange, register, require_single_label

COEFFICIENTS = ("paper", "uniform")


def zero_out_logits(model, features: dict[str, torch.Tensor], modality: str,
                    detach_head: bool = False) -> torch.Tensor:
    """head([0; …; z_m; …; 0]) = W_m z_m + b (N, K): modality m's logits through the fusion head with
    every other modality's features set to zero (with a sum fusion, W z_m + b). `detach_head`: the
    head's weights are constants (DGL: the unimodal loss never moves the head)."""
    head = model.fusion_head
    weight, bias = head.weight, head.bias
    if detach_head:
        weight, bias = weight.detach(), bias.detach()
    if model.fusion_kind == "concat":
        i = list(features).index(modality)
        weight = weight[:, i * model.feature_dim:(i + 1) * model.feature_dim]
    return F.linear(features[modality], weight, bias)


def arl_coefficients(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """The paper's asymmetric coefficients [a_A, a_B] (2,) for one batch of each modality's logits (N, K):
    q_m = 1 / H_m with H_m the batch mean of the entropy of softmax(p_m) (nats), d_m = Σ_i softmax(p_m)[i, y_i]
    (the true-class probability summed over the batch), and [a_A, a_B] = softmax([T q_A/q_B, T d_A/d_B])."""
    def entropy(logits):
        log_p = F.log_softmax(logits, 1)
        return (-(log_p.exp() * log_p).sum(1).mean()).clamp(min=1e-12)  # a saturated softmax: no 0/0

    def true_class(logits):
        return F.softmax(logits, 1).gather(1, labels[:, None]).sum()

    confidence = entropy(logits_b) / entropy(logits_a)  # q_A / q_B
    correctness = true_class(logits_a) / true_class(logits_b)  # d_A / d_B
    return torch.softmax(temperature * torch.stack([confidence, correctness]), 0)


@register
class ARL(Method):
    """Asymmetric Representation Learning. Loss L = CE(g(z), y) + γ_e Σ_m CE(g([0; z_m; 0]), y), g the
    fusion head, whose zero-out logits (`zero_out_logits`, W_m z_m + b) are the unimodal
    predictions: γ_e = 1 in the warm-up epochs 1…`arl_warmup`, γ (`arl_gamma`) after. After the warm-up,
    between backward and the optimizer step, encoder m's gradients are multiplied by 1 + a_m, the paper's
    asymmetric coefficients of that batch (`arl_coefficients`, its Eq. 17-20); then the global gradient
    norm is clipped (`arl_clip`). Prediction: the fusion head. Two modalities (the coefficient rule is
    pairwise; the paper's three-modality result has no released rule or code); single-label data.

    From the official code (`main_arl_variance.py` at 358af4f): the loss and γ_e's switch (l. 150-162;
    the official switch is `epoch > start` on 0-based epochs with `--start 5`, so our 1-based warm-up is
    6 epochs; it also requires the previous epoch's *test* accuracies to be non-zero, always true after a
    trained epoch, and not read here), the zero-out unimodal logits through the one shared head
    (`models/basic_model.py` l. 137-215), the clip at 40 (l. 171), the encoder-output gradient scale
    (`GradScale`, `models/backbone.py` l. 71-86, 325-351; scaling the gradient at an encoder's output by
    c scales every encoder parameter's gradient by c, which is what we do), γ = 4, T = 8, start = 5
    (`cramed_arl.sh` l. 3).

    Where the released code departs from the paper, and what we do:
    - Its per-batch "modality analysis" (l. 116-141) computes weights σ(T·[c̄_v·w_a, c̄_a·w_v]) from
      clamped entropy shares w and mean-|logit| shares c̄, prints them and never applies them; the
      coefficient actually assigned is 0.5 for both modalities, once, in the warm-up branch (l. 163-164),
      so a working run would scale both encoders by 1.5 after the warm-up. The script also stops before
      training (`raise EOFError` inside the ResNet branch, l. 259-262) and `GradScale.backward` multiplies
      by a tuple (a TypeError). We implement the paper's coefficients (`arl_coefficients="paper"`, what
      the rows show); `"uniform"` scales both encoders by 1.5, the code's only assignment (and the one a
      third-party re-implementation, VuVoCodes/AsynchronousFunction, used: 62.9 % on CREMA-D against the
      paper's 76.6 %).
    - The epoch is selected on validation; the official script keeps the best *test* accuracy among
      epochs > 30 (l. 391) and has no validation split.
    - The package's optimizer: Adam (betas 0.9, 0.999) unless `--optimizer sgd` (official: SGD lr 1e-3,
      momentum 0.9, weight decay 1e-4 — `--weight-decay 1e-4` — and MultiStepLR([70, 150], 0.1), not
      applied). Under Adam, a gradient scale that stays constant cancels out of the update (Adam is
      invariant to it); the coefficients act through how they change from batch to batch. With
      `--optimizer sgd` they act fully, as officially.
    - Modality m's reading is the fusion head's part W_m z_m + b/M; the official unimodal accuracy is that
      of W_m z_m + b (they differ by b/2).
    History columns: `arl_scale_<m>` (the epoch's mean 1 + a_m; 1 in the warm-up).
    """
    name = "arl"
    description = ("zero-out unimodal losses through the fusion head, and each encoder's gradient scaled by an "
                   "asymmetric coefficient from its confidence and correctness")
    papers = ("wei2025arl",)
    max_modalities = 2
    model_parts = ("encoders", "fusion_head", "fusion_kind", "feature_dim")
    hyperparameters = (
        Hyperparameter("arl_gamma", 4.0, "ARL's weight γ of the unimodal losses after the warm-up (> 0)",
                       valid=lambda v: v > 0, rule="> 0 (official 4, cramed_arl.sh)",
                       search=SearchRange(1.0, 8.0, log=True, source="ours, around the official 4 (cramed_arl.sh l. 3)")),
        Hyperparameter("arl_temperature", 8.0, "ARL's temperature T of the asymmetric coefficients (> 0)",
                       valid=lambda v: v > 0, rule="> 0 (official 8, cramed_arl.sh)",
                       search=SearchRange(1.0, 16.0, log=True, source="ours, around the official 8 (cramed_arl.sh l. 3)")),
        Hyperparameter("arl_warmup", 6, "ARL's warm-up: epochs 1..this train with γ = 1 and no gradient scaling",
                       valid=lambda v: v >= 0, rule="≥ 0 (official --start 5 on 0-based epochs: 6 epochs)"),
        Hyperparameter("arl_clip", 40.0, "ARL: clip the global gradient norm at this value (0: no clipping)",
                       valid=lambda v: v >= 0, rule="≥ 0 (official 40)"),
        Hyperparameter("arl_coefficients", "paper", "ARL's gradient scales: paper (1 + a_m, Eq. 17-20) or "
                       "uniform (1.5 for both, the released code's only assignment)", choices=COEFFICIENTS),
    )

    def setup(self, context) -> None:
        super().setup(context)
        if len(context.modalities) != 2:
            raise UserError(f"arl's coefficients compare two modalities; got {list(context.modalities)}")
        require_single_label("arl", context, "reads one class distribution per sample")
        self.epoch = 1
        self.scales = None
        self._reset_log()

    def _reset_log(self) -> None:
        self.scale_sums = torch.zeros(2, device=self.context.device)
        self.steps = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _after_warmup(self) -> bool:
        return self.epoch > self.config.arl_warmup

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        unimodal = {m: zero_out_logits(self.model, out.features, m) for m in self.context.modalities}
        gamma = self.config.arl_gamma if self._after_warmup() else 1.0
        if self._after_warmup():
            if self.config.arl_coefficients == "paper":
                a, b = (unimodal[m].detach() for m in self.context.modalities)
                self.scales = 1 + arl_coefficients(a, b, labels, self.config.arl_temperature)
            else:
                self.scales = torch.full((2,), 1.5, device=labels.device)
        else:
            self.scales = torch.ones(2, device=labels.device)
        self.scale_sums += self.scales
        self.steps += 1
        return loss_fn(out.fusion, labels) + gamma * sum(loss_fn(p, labels) for p in unimodal.values())

    def after_backward(self, out, labels, epoch: int) -> None:
        if self._after_warmup():
            for scale, m in zip(self.scales, self.context.modalities):
                for p in self.model.encoders[m].parameters():
                    if p.grad is not None:
                        p.grad.mul_(scale)
        if self.config.arl_clip > 0:
            self.clip_gradients(self.config.arl_clip)

    def end_epoch(self, metrics) -> None:
        means = (self.scale_sums / max(self.steps, 1)).tolist()
        for m, value in zip(self.context.modalities, means):
            metrics.row[f"arl_scale_{m}"] = value
        self._reset_log()
