"""PMR — Fan et al., "PMR: Prototypical Modal Rebalance for Multimodal Learning", CVPR 2023.
Official code: fanyunfeng-bit/Modal-Imbalance-PMR, `main_Prototype_grad.py` (read at commit 1e5c79b).
Trains L_AB; each modality's features get class prototypes, and the modality whose features sit
farther from their true class's prototype gets an extra prototype cross-entropy, weighted by α.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register, require_single_label


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """sim[i, k] = −‖f_i − c_k‖₂ (Euclidean, not squared), (N, K) from features (N, d) and
    prototypes (K, d): PMR's prototype "logits"."""
    return -torch.cdist(features, prototypes)


def prototype_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of H(softmax(sim)) (nats), 0-d: PER's entropy of the prototype distribution."""
    log_p = F.log_softmax(logits, 1)
    return -(log_p.exp() * log_p).sum(1).mean()


def pmr_coefficients(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor,
                     alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(β, λ, ρ) for one batch, as 0-d tensors: ρ = s_A / s_B with s_m = Σ_i softmax(sim_m)[i, y_i]
    (a batch sum); (β, λ) = (0, α) when ρ > 1 (B is behind: B's prototype loss), (α, 0) when ρ < 1,
    (0, 0) when equal."""
    score_a = F.softmax(logits_a, 1).gather(1, labels[:, None]).sum()
    score_b = F.softmax(logits_b, 1).gather(1, labels[:, None]).sum()
    ratio = score_a / score_b
    zero, full = torch.zeros_like(ratio), torch.full_like(ratio, alpha)
    beta = torch.where(ratio < 1, full, zero)
    lam = torch.where(ratio > 1, full, zero)
    return beta, lam, ratio


@register
class PMR(Method):
    """Prototypical Modal Rebalance: L_AB + β·CE(sim_A, y) + λ·CE(sim_B, y) inside the epoch window
    [`pmr_start`, `pmr_end`] (`pmr_coefficients`), plain L_AB outside it. Modality accuracies are read
    from the fusion head's parts W_m z_m + b/M (the official code's `out_a`, `out_v`); prediction is the
    fusion head. The class prototypes c_k^m are the mean encoder feature of class k, computed in eval
    mode without gradient on the first ⌊n/10⌋ batches of a shuffled pass over the training split,
    before the first epoch and after every epoch, then blended c ← (1 − m)·c_new + m·c_old
    (`pmr_momentum`; no blending before epoch 2, as the official `epoch <= 0` test).

    Defaults are the official script's argparse defaults: α = 1.0 (its CREMA-D commands use 2.0),
    momentum 0.2, modulation over its 0-based epochs 0–100 (our 1-based 1–101: every epoch of our runs).
    Deviations, on purpose:
    - The prototype pass draws its batches with its own generator seeded from (seed, epoch), so it
      neither shifts the training batches' order nor breaks resuming, and it adds the dataset's
      training noise (the official code reads the same augmented loader it trains on).
    - A class absent from that sample keeps its previous prototype (the official code divides by a
      zero count and gets NaN); before the first epoch such a class falls back to the mean of all
      sampled features.
    - Two modalities only (the official rule compares two scores); single-label tasks only (class
      prototypes need one class per sample). Both fusions.
    - Official optimizer (`main_Prototype_grad.py` at 1e5c79b): SGD by default (l. 34), momentum 0.9,
      weight decay 1e-4 and StepLR(70, 0.1) (l. 464-465), or Adam with betas (0.9, 0.99) (l. 470); the
      argparse rate is 1e-4 (l. 43), while the released commands pass 1e-3 or 5e-4 (`bash.sh` l. 58, 130,
      134, 140). We use the package's optimizer settings: Adam with betas (0.9, 0.999) unless
      `--optimizer sgd` (momentum 0.9; `--weight-decay 1e-4` for the official decay; no StepLR), at `--lr`.
    - BalanceBenchmark's PMR trainer was not used as a reference.
    - The paper's coefficients (its Eq. 11) are continuous, β = clip(1/ρ − 1, 0, 1)·α and γ =
      clip(ρ − 1, 0, 1)·α; the official code uses the steps 0/α above, and so do we.
    - The paper's prototypical entropy regularization (PER, its Eq. 13: L − μ·γ·H(softmax(sim_A)) −
      μ·β·H(softmax(sim_B)), raising the entropy of the *leading* modality's prototype distribution in
      the first E_r epochs, μ "1e-2 or 1e-3", E_r not given) is not in the official code nor in
      BalanceBenchmark's trainer. `pmr_entropy` (μ, default 0: the official code) and
      `pmr_entropy_epochs` (E_r, our default 5) add it, with the code's step coefficients; its measured
      effect here is in docs/methods.md ("Where methods deviate").
    History columns: `pmr_ratio` (the epoch's mean ρ; 0 outside the window) and `pmr_boost_<m>`
    (share of steps in which modality m got the prototype loss).
    """
    name = "pmr"
    description = ("class prototypes per modality each epoch; the modality behind gets an extra prototype cross-entropy "
                   "loss")
    papers = ("fan2023pmr",)
    max_modalities = 2
    hyperparameters = (
        Hyperparameter("pmr_alpha", 1.0, "PMR's weight α of the behind modality's prototype loss (> 0)",
                       valid=lambda v: v > 0, rule="> 0 (official default 1.0; its CREMA-D commands use 2.0)",
                       search=SearchRange(0.25, 4.0, log=True,
                                          source="ours, around the official default 1.0 and CREMA-D's 2.0")),
        Hyperparameter("pmr_momentum", 0.2, "PMR's prototype momentum m in [0, 1): c ← (1 − m) c_new + m c_old",
                       valid=lambda v: 0 <= v < 1, rule="in [0, 1) (official default 0.2)"),
        Hyperparameter("pmr_start", 1, "first epoch with the prototype loss (inclusive, counted from 1)",
                       valid=lambda v: v >= 1, rule="≥ 1"),
        Hyperparameter("pmr_end", 101, "last epoch with the prototype loss (inclusive; official 0-based 100)",
                       valid=lambda v: v >= 1, rule="≥ 1"),
        Hyperparameter("pmr_entropy", 0.0, "μ of the paper's prototype entropy term (PER) on the leading "
                       "modality, ≥ 0 (0, the default: off, as the official code)",
                       valid=lambda v: v >= 0, rule="≥ 0 (the paper uses 1e-2 or 1e-3)"),
        Hyperparameter("pmr_entropy_epochs", 5, "E_r: PER acts in epochs 1..E_r (the paper: the first few; ours 5)",
                       valid=lambda v: v >= 1, rule="≥ 1"),
    )

    @classmethod
    def check_options(cls, config) -> None:
        if config.pmr_start > config.pmr_end:
            raise UserError(f"--pmr-start/--pmr-end must be 1 ≤ start ≤ end, got {(config.pmr_start, config.pmr_end)}")

    def setup(self, context) -> None:
        super().setup(context)
        if len(self.context.modalities) != 2:
            raise UserError(f"pmr compares two modalities' prototype scores; got {list(self.context.modalities)}")
        require_single_label("pmr", context, "builds one prototype per class")
        self.prototypes = None
        self._reset_log()

    def _reset_log(self) -> None:
        zero = torch.zeros((), device=self.context.device)
        self.ratio_sum, self.boosts, self.steps = zero.clone(), {m: zero.clone() for m in self.context.modalities}, 0

    def needs(self) -> dict[str, str]:
        return {"training_sample": "its class prototypes are built on a tenth of the training split "
                                   "(pass train_loader=)"}

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.prototypes is None:  # before the first epoch (a resumed run has them from its checkpoint)
            self.prototypes = self._class_means(epoch=0)

    @torch.no_grad()
    def _class_means(self, epoch: int, previous: dict | None = None) -> dict[str, torch.Tensor]:
        """Each modality's class-mean features (K, d) on ⌊n/10⌋ shuffled training batches."""
        context, model = self.context, self.model
        batch = context.batch_size
        batches = max(1, (context.train_size // batch) // 10)
        generator = torch.Generator().manual_seed(context.seed * 100_003 + epoch)
        x, y = next(iter(context.training_sample(batches * batch, generator)))
        was_training = model.training
        model.eval()
        features = model(x).features
        model.train(was_training)
        classes = context.num_classes
        counts = torch.bincount(y, minlength=classes).to(features[self.context.modalities[0]].dtype)
        means = {}
        for m, f in features.items():
            sums = torch.zeros(classes, f.shape[1], device=f.device, dtype=f.dtype).index_add_(0, y, f)
            fallback = previous[m] if previous is not None else f.mean(0).expand(classes, -1)
            means[m] = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], fallback)
        return means

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        loss = loss_fn(out.fusion, labels)
        if not (self.config.pmr_start <= self.epoch <= self.config.pmr_end):
            return loss
        a, b = self.context.modalities
        logits = {m: prototype_logits(out.features[m], self.prototypes[m]) for m in (a, b)}
        beta, lam, ratio = pmr_coefficients(logits[a].detach(), logits[b].detach(), labels, self.config.pmr_alpha)
        self.ratio_sum += ratio
        self.boosts[a] += (beta > 0).float()
        self.boosts[b] += (lam > 0).float()
        self.steps += 1
        loss = loss + beta * F.cross_entropy(logits[a], labels) + lam * F.cross_entropy(logits[b], labels)
        if self.config.pmr_entropy > 0 and self.epoch <= self.config.pmr_entropy_epochs:
            # PER: the leading modality's prototype distribution is kept uncertain (its entropy raised),
            # weighted by the coefficient that boosts the other one.
            mu = self.config.pmr_entropy
            loss = loss - mu * lam * prototype_entropy(logits[a]) - mu * beta * prototype_entropy(logits[b])
        return loss

    def end_epoch(self, metrics: EpochMetrics) -> None:
        fresh = self._class_means(metrics.epoch, previous=self.prototypes)
        if metrics.epoch >= 2:  # the official code blends from its second recomputation on
            m = self.config.pmr_momentum
            fresh = {k: (1 - m) * v + m * self.prototypes[k] for k, v in fresh.items()}
        self.prototypes = fresh
        metrics.row["pmr_ratio"] = self.ratio_sum.item() / self.steps if self.steps else 0.0
        for modality, count in self.boosts.items():
            metrics.row[f"pmr_boost_{modality}"] = count.item() / self.steps if self.steps else 0.0
        self._reset_log()

    def state_dict(self) -> dict:
        return {"prototypes": {m: p.cpu() for m, p in self.prototypes.items()} if self.prototypes else None}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("prototypes")
        self.prototypes = {m: p.to(self.context.device) for m, p in saved.items()} if saved else None
