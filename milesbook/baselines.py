"""The seven methods the MILES paper compares against, each a few hooks on the one trainer.

| method  | trains                      | hook                                                      |
|---------|-----------------------------|-----------------------------------------------------------|
| ogm     | L_AB (official) or Eq. 3    | gradient modulation every step (`after_backward`)         |
| ogm-ge  | same                        | + Gaussian noise on the modulated gradients               |
| gblend  | w_AB L_AB + Σ w_m L_m       | loss weights estimated before epochs (`start_epoch`)      |
| mslr-k  | Eq. 3                       | fixed per-encoder rates (`setup`)                         |
| mslr-s  | Eq. 3                       | smoothed per-encoder rates (`setup`)                      |
| mslr-d  | Eq. 3                       | rates rescaled every w epochs (`end_epoch`)               |
| mses    | Eq. 3                       | per-modality early stopping (`end_epoch`, `should_stop`)  |

Each class docstring says which published variant it implements and where we had to choose.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from .errors import UserError
from .methods import METHODS, Aux, EpochMetrics, Method


def _two_modalities(method: str, model) -> tuple[str, str]:
    if len(model.modalities) != 2:
        raise UserError(f"{method} is defined for two modalities, got {list(model.modalities)}")
    return model.modalities


# ------------------------------------------------------------------------------------------------
# OGM / OGM-GE — Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
# CVPR 2022
# ------------------------------------------------------------------------------------------------

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


class OGM(Method):
    """On-the-fly Gradient Modulation (OGM; `ogm-ge` adds Generalization Enhancement).

    Every step inside the epoch window [`ogm_start`, `ogm_end`] (epochs counted from 1, both
    inclusive; the official code counts 0–50), after backward and before the optimizer step, the
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
    Beware of Adam (the MILES paper's optimizer, our default): it divides each gradient by a running
    estimate of its own scale, so a coefficient that stays roughly constant is almost cancelled, and
    OGM then trains nearly like vanilla. The official code uses SGD with momentum (`--optimizer sgd`).
    """
    name = "ogm"
    noise = False

    def __init__(self, config):
        super().__init__(config)
        self.trains_heads = config.ogm_source == "heads"
        self.modality_source = "heads" if self.trains_heads else "parts"

    def setup(self, trainer) -> None:
        super().setup(trainer)
        _two_modalities(self.name, self.model)
        min_dims = 4 if self.config.ogm_params == "conv" else 2
        self.params = {m: [p for p in self.model.encoders[m].parameters() if p.dim() >= min_dims]
                       for m in self.model.modalities}
        self._reset_log()

    def _reset_log(self):
        self.k_sum = {m: torch.zeros((), device=self.trainer.device) for m in self.model.modalities}
        self.steps = 0

    def after_backward(self, out, labels, epoch: int) -> None:
        if not (self.config.ogm_start <= epoch <= self.config.ogm_end):
            return
        logits = out.heads if self.trains_heads else out.parts
        a, b = self.model.modalities
        with torch.no_grad():
            coefficients = dict(zip((a, b), ogm_coefficients(logits[a].detach(), logits[b].detach(), labels,
                                                             self.config.ogm_alpha)))
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


class OGMGE(OGM):
    __doc__ = OGM.__doc__
    name = "ogm-ge"
    noise = True


# ------------------------------------------------------------------------------------------------
# G-Blend — Wang, Tran & Feiszli, "What Makes Training Multi-modal Classification Networks Hard?",
# CVPR 2020
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# MSLR — Yao & Mihalcea, "Modality-specific Learning Rates for Effective Multimodal Additive
# Late-fusion", Findings of ACL 2022
# ------------------------------------------------------------------------------------------------

def mslr_smoothed_rates(unimodal_lrs: dict[str, float], smoothing: float) -> dict[str, float]:
    """MSLR-S: lr_m = λ·lr_m^uni + (1 − λ)·mean_k lr_k^uni (λ = 1 keeps, λ = 0 equalises)."""
    mean = sum(unimodal_lrs.values()) / len(unimodal_lrs)
    return {m: smoothing * lr + (1 - smoothing) * mean for m, lr in unimodal_lrs.items()}


def mslr_dynamic_factor(metric_history: list[float], window: int) -> float:
    """MSLR-D: M_m(t) / mean(M_m(t−w+1..t)) from a modality's validation metrics (latest last);
    1.0 while fewer than `window` values exist or their mean is 0."""
    if len(metric_history) < window:
        return 1.0
    recent = metric_history[-window:]
    mean = sum(recent) / window
    return recent[-1] / mean if mean > 0 else 1.0


class MSLR(Method):
    """Modality-specific learning rates, late-fusion setting with trained unimodal heads (Eq. 3); the
    fusion head keeps the global rate, each encoder (with its head) gets its own.
    - `mslr-k` ("keep"): each encoder at its unimodal model's best rate (`mslr_lrs`, e.g. found by
      `milesbook compare`'s unimodal search);
    - `mslr-s` ("smooth"): rates moved towards their mean by λ = `mslr_lambda` (the paper's exact
      smoothing is not public: this linear form is our reading);
    - `mslr-d` ("dynamic"): starting from `mslr_lrs` (or the global rate when none are given), every
      `mslr_window` epochs each encoder's rate is multiplied by its head's current validation
      metric (accuracy; micro-F1 on multi-label data) over the mean of the last `mslr_window` ones
      (`mslr_dynamic_factor`)."""
    trains_heads = True
    modality_source = "heads"

    def __init__(self, config, variant: str):
        super().__init__(config)
        self.variant, self.name = variant, f"mslr-{variant}"

    def setup(self, trainer) -> None:
        super().setup(trainer)
        modalities = list(self.model.modalities)
        given = dict(self.config.mslr_lrs)
        if given and sorted(given) != sorted(modalities):
            raise UserError(f"--mslr-lrs must give a rate for each of {modalities}, got {sorted(given)}")
        if not given and self.variant in ("k", "s"):
            raise UserError(f"{self.name} needs each modality's best unimodal learning rate: --mslr-lrs "
                            f"{','.join(f'{m}=0.001' for m in modalities)} (milesbook compare finds them "
                            "with a small unimodal search)")
        rates = given or {m: self.config.lr for m in modalities}
        if self.variant == "s":
            rates = mslr_smoothed_rates(rates, self.config.mslr_lambda)
        for m, lr in rates.items():
            self.group(m)["lr"] = lr
        self.metric_history = {m: [] for m in modalities}

    def end_epoch(self, metrics: EpochMetrics) -> None:
        if self.variant != "d":
            return
        for m, values in self.metric_history.items():
            values.append(metrics.row[f"val_{metrics.metric}_{m}"])
            if metrics.epoch % self.config.mslr_window == 0:
                self.group(m)["lr"] *= mslr_dynamic_factor(values, self.config.mslr_window)

    def state_dict(self) -> dict:
        return {"metric_history": self.metric_history}

    def load_state_dict(self, state: dict) -> None:
        self.metric_history = {m: list(v) for m, v in state["metric_history"].items()}


# ------------------------------------------------------------------------------------------------
# MSES — Fujimori et al., "Modality-specific Learning Rate Control for Multimodal Classification",
# ACPR 2019
# ------------------------------------------------------------------------------------------------

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

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.tracked = ["fusion", *self.model.modalities]
        self.best = {k: -math.inf for k in self.tracked}
        self.waited = {k: 0 for k in self.tracked}
        self.stopped_at = {m: 0 for m in self.model.modalities}  # epoch it stopped; 0 = still training
        self.best_weights = {}

    def _modules(self, m: str):
        return [self.model.encoders[m], self.model.heads[m]]

    def _freeze(self, m: str) -> None:
        self.group(m)["lr"] = 0.0
        for module in self.model.encoders[m].modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0  # running statistics stay as they were at the stop

    def end_epoch(self, metrics: EpochMetrics) -> None:
        values = {"fusion": metrics.row[f"val_{metrics.metric}_fusion"],
                  **{m: metrics.row[f"val_{metrics.metric}_{m}"] for m in self.model.modalities}}
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
        metrics.row.update({f"mses_stopped_{m}": self.stopped_at[m] for m in self.model.modalities})

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


METHODS.update({"mses": MSES, "mslr-k": lambda config: MSLR(config, "k"),
                "mslr-s": lambda config: MSLR(config, "s"), "mslr-d": lambda config: MSLR(config, "d"),
                "ogm": OGM, "ogm-ge": OGMGE, "gblend": GBlend})
BASELINES = ("mses", "mslr-k", "mslr-s", "mslr-d", "ogm", "ogm-ge", "gblend")
