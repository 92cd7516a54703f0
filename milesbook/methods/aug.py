"""AUG — Jiang, Huang & Yang, "Rethinking Multimodal Learning from the Perspective of Mitigating
Classification Ability Disproportion", NeurIPS 2025 (arXiv 2502.20120). Official code:
njustkmg/NeurIPS25-AUG, `train_CREMAD.py`, `model/AudioVideo.py` and `data/crema.json`, read at 841d079.

Each modality is classified by a sum of heads through one shared classifier, trained in alternating
unimodal steps with a boosting loss on the newest head; at regular checks the modality whose training
confidence lags gets one more head (more classification ability). Prediction: a fixed-weight sum of
the modalities' logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models import FusionOutput
from .base import Hyperparameter, Method, SearchRange, register, require_single_label

HIDDEN = 256  # the heads' width (official `Linear(512, 256)`, model/AudioVideo.py l. 47-54)
MARGIN = 0.01  # the two-modality check's dead band around λ (train_CREMAD.py l. 222-228)


class AugClassifier(nn.Module):
    """AUG's classifier: for each modality m up to `max_heads` heads Linear(d → HIDDEN) + ReLU, of which
    the first `active[m]` are in use, all read by one shared Linear(HIDDEN → K). Every head is made at
    the start (so a checkpoint or a selected epoch always has the same keys); one is "added" by counting
    it in `active`."""

    def __init__(self, modalities, feature_dim: int, num_classes: int, max_heads: int):
        super().__init__()
        self.modalities = tuple(modalities)
        self.heads = nn.ModuleDict({m: nn.ModuleList(nn.Linear(feature_dim, HIDDEN) for _ in range(max_heads))
                                    for m in self.modalities})
        self.classifier = nn.Linear(HIDDEN, num_classes)
        self.register_buffer("active", torch.ones(len(self.modalities), dtype=torch.long))

    def count(self, modality: str) -> int:
        return int(self.active[self.modalities.index(modality)])

    def head_logits(self, modality: str, features: torch.Tensor) -> list[torch.Tensor]:
        """Each active head's logits (N, K) for modality m's features (N, d), oldest first."""
        heads = self.heads[modality][:self.count(modality)]
        return [self.classifier(F.relu(head(features))) for head in heads]


def boosting_loss(head_logits: list[torch.Tensor], targets: torch.Tensor, residual_weight: float = 0.5) -> torch.Tensor:
    """AUG's loss of one modality from its heads' logits (each (N, K)) and one-hot targets (N, K): with
    F = Σ heads, CE(F, y); with more than one head, o = F minus the newest head h, and
    CE(F, y) + CE(o, y) + CE(h, y) − λ·CE(h, y ⊙ softmax(sg(o))) (λ = `residual_weight`; official 0.5,
    `train_CREMAD.py` l. 52-57): the newest head also fits the residual y − λ·y ⊙ softmax(o)."""
    total = sum(head_logits)
    loss = F.cross_entropy(total, targets)
    if len(head_logits) > 1:
        newest = head_logits[-1]
        earlier = total - newest
        loss = loss + F.cross_entropy(earlier, targets) + F.cross_entropy(newest, targets) \
            - residual_weight * F.cross_entropy(newest, targets * F.softmax(earlier.detach(), 1))
    return loss


def heads_to_add(confidence: dict[str, float], lam: float) -> list[str]:
    """The modalities that get a head at a check, from their summed training confidences s_m. Two
    modalities (the official rule, l. 220-228): ratio = s_A / s_B; ratio > λ + 0.01 → B, ratio < λ − 0.01
    → A. More (the three-modality script, commit 966dbf5, `train_NVGesture.py` l. 144-146, 297-305): every m
    with s_m / Σ_{k≠m} s_k < λ."""
    names = list(confidence)
    if len(names) == 2:
        a, b = names
        ratio = confidence[a] / confidence[b]
        return [b] if ratio > lam + MARGIN else [a] if ratio < lam - MARGIN else []
    total = sum(confidence.values())
    return [m for m in names if confidence[m] / (total - confidence[m]) < lam]


@register
class AUG(Method):
    """AUG (sustained boosting with adaptive classifier assignment). Model: the encoders' features z_m,
    and AUG's own classifier (`AugClassifier`, attached to the model as `aug` and its parameters added to
    the optimizer: the shared Linear to the "fusion" group, modality m's heads to m's group). F_m = Σ of
    m's active heads' logits.

    Every batch: one optimizer step per modality, in the dataset's order (officially audio, then video,
    l. 42-89), each on `boosting_loss` of that modality alone; gradients are set to None between steps.
    Over the epoch s_m = Σ_i softmax(F_m)[i, y_i] (l. 82-86); after epoch 1 and every `aug_every`-th epoch
    (official: epoch 0 and each (e+1) % (epochs/10) == 0, l. 205-206, 220) `heads_to_add` decides which
    modality gets one more head, up to `aug_max_heads`; λ (`aug_lambda`) is 1.0 with two modalities (l. 165)
    and 0.4 with more (the three-modality script). Prediction (`readout`): Σ_m w_m F_m with
    `aug_first_weight` for the first modality and the rest shared equally (official 0.4·F_a + 0.6·F_v,
    l. 125-133, 166; with more modalities equal weights, the three-modality script's 0.33/0.33/0.34);
    modality m's reading is F_m.

    What "a new head" means here: one more Linear(d → 256) + ReLU on z_m, read by the shared classifier
    (officially `add_layer`, model/AudioVideo.py l. 67-74, with d = 512). Where the released code departs
    from the paper: the optimizer is built once (l. 201), before any head is added, and `add_layer` never
    hands the new head to it, so added heads stay at their initialization and only the encoder and the
    shared classifier learn through them. The paper trains every classifier it assigns, and so do we by
    default (`aug_train_added`, what the rows show); `--no-aug-train-added` keeps them fixed, as the code.

    Deviations, on purpose:
    - The epoch is selected on validation; the official script keeps the best *test* accuracy (`>=`) over
      all 200 epochs (l. 214-219).
    - The package's optimizer: Adam (betas 0.9, 0.999) unless `--optimizer sgd` (official `data/crema.json`:
      SGD lr 1e-2, momentum 0.9, weight decay 1e-4 — `--weight-decay 1e-4` — StepLR(70, 0.1) stepped at
      each epoch's start, not applied), at `--lr`; the package's encoders (official: ResNet-18, d = 512).
    - Heads are made at the start (`aug_max_heads` per modality) and counted in; a head's initialization
      is PyTorch's default Linear (officially Xavier-normal with zero bias when added).
    - The model's own fusion head and unimodal heads are not used (as MLA's unused columns).
    - The residual weight λ is the code's 0.5 (its comment and the older scripts say 0.2).
    - More than two modalities with the three-modality rule of `heads_to_add` (that script, since
      deleted, also scaled each added head by a learned weight network; not implemented).
    History columns: `aug_ratio` (s_A / s_B of the epoch; with more modalities `aug_ratio_<m>` =
    s_m / Σ_{k≠m} s_k) and `aug_heads_<m>` (heads in use after the epoch's check). Single-label data.
    """
    name = "aug"
    description = ("boosting per modality through one shared classifier: the modality whose confidence lags gets one "
                   "more head; a fixed-weight sum predicts")
    papers = ("jiang2025aug",)
    steps_in_loss = True
    trains_heads = True  # its heads' logits reach the encoders (the model's own unimodal heads are unused)
    modality_source = "heads"
    model_parts = ("feature_dim",)
    hyperparameters = (
        Hyperparameter("aug_lambda", 0.0, "AUG's target confidence ratio λ at a check (0: the official value for "
                       "the number of modalities, 1.0 for two and 0.4 for more)",
                       valid=lambda v: v >= 0, rule="≥ 0 (0: official 1.0 for two modalities, 0.4 for three)",
                       search=SearchRange(0.8, 1.25, log=True, source="ours, around the official 1.0 (train_CREMAD.py l. 165)")),
        Hyperparameter("aug_every", 0, "AUG checks whether to add a head after epoch 1 and every this many epochs "
                       "(0: a tenth of --epochs, as officially)", valid=lambda v: v >= 0, rule="≥ 0"),
        Hyperparameter("aug_first_weight", 0.0, "AUG's prediction weight of the first modality's logits, the rest "
                       "sharing the remainder (0: official, 0.4 for two modalities and equal weights for more)",
                       valid=lambda v: 0 <= v < 1, rule="in [0, 1) (0: official merge_alpha 0.4 for two modalities)",
                       search=SearchRange(0.2, 0.8, source="ours, around the official 0.4 (train_CREMAD.py l. 166)")),
        Hyperparameter("aug_max_heads", 12, "AUG: at most this many heads per modality (≥ 1)",
                       valid=lambda v: v >= 1, rule="≥ 1 (official: no cap; 200 epochs make at most 11 checks)"),
        Hyperparameter("aug_train_added", True, "AUG: train the heads it adds (the paper); off: keep them at "
                       "their initialization (the released code)"),
    )

    def setup(self, context) -> None:
        super().setup(context)
        if len(context.modalities) < 2:
            raise UserError("aug alternates between modalities; it needs at least two")
        require_single_label("aug", context, "fits one class distribution per sample")
        every = self.config.aug_every
        if not every:
            if context.epochs is None:
                raise UserError("aug checks for a new head every tenth of the run: pass epochs= (your loop's "
                                "epoch count) or aug_every=")
            every = max(1, context.epochs // 10)
        self.every = every
        classifier = getattr(self.model, "aug", None)
        if classifier is None:  # a model trained with AUG before (a resumed run's) has it already
            classifier = AugClassifier(context.modalities, self.model.feature_dim, context.num_classes,
                                       self.config.aug_max_heads).to(context.device)
            self.model.add_module("aug", classifier)
        # Its parameters join the optimizer's groups (the classifier "fusion", a modality's heads its own),
        # unless this optimizer has them already.
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        for name, module in (("fusion", classifier.classifier), *((m, classifier.heads[m]) for m in context.modalities)):
            self.group(name)["params"].extend(p for p in module.parameters() if id(p) not in held)
        self.classifier = classifier
        two = len(context.modalities) == 2
        self.lam = self.config.aug_lambda or (1.0 if two else 0.4)
        first = self.config.aug_first_weight or (0.4 if two else 1 / len(context.modalities))
        rest = (1 - first) / (len(context.modalities) - 1)
        self.weights = {m: first if i == 0 else rest for i, m in enumerate(context.modalities)}
        self._reset_log()

    def _reset_log(self) -> None:
        self.confidence = {m: torch.zeros((), device=self.context.device) for m in self.context.modalities}

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.context.num_classes).float()  # the official labels are one-hot floats

    def _modality_loss(self, m: str, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.classifier.head_logits(m, features)
        with torch.no_grad():
            self.confidence[m] += F.softmax(sum(logits), 1).gather(1, labels[:, None]).sum()
        return boosting_loss(logits, self._targets(labels))

    def _freeze_added(self, m: str) -> None:
        if not self.config.aug_train_added:
            for head in self.classifier.heads[m][1:]:
                for p in head.parameters():
                    p.grad = None

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        # Every modality but the last steps the optimizer here; the loop's own step is the last one's.
        *earlier, last = self.context.modalities
        done = []
        for m in earlier:
            sub = self._modality_loss(m, out.features[m], labels)
            self.optimizer.zero_grad(set_to_none=True)
            sub.backward()
            self._freeze_added(m)
            self.optimizer.step()
            done.append(sub.detach())
        self.optimizer.zero_grad(set_to_none=True)
        return self._modality_loss(last, out.features[last], labels) + sum(done)

    def after_backward(self, out, labels, epoch: int) -> None:
        self._freeze_added(self.context.modalities[-1])

    @torch.no_grad()
    def readout(self, out) -> FusionOutput:
        heads = {m: sum(self.classifier.head_logits(m, z)) for m, z in out.features.items()}
        parts = {m: self.weights[m] * z for m, z in heads.items()}  # Σ_m parts = the fused logits
        return FusionOutput(sum(parts.values()), heads, parts, out.features)

    def end_epoch(self, metrics) -> None:
        confidence = {m: s.item() for m, s in self.confidence.items()}
        names = list(confidence)
        if len(names) == 2:
            metrics.row["aug_ratio"] = confidence[names[0]] / confidence[names[1]]
        else:
            total = sum(confidence.values())
            metrics.row.update({f"aug_ratio_{m}": s / (total - s) for m, s in confidence.items()})
        if metrics.epoch == 1 or metrics.epoch % self.every == 0:
            for m in heads_to_add(confidence, self.lam):
                i = self.context.modalities.index(m)
                if self.classifier.active[i] < self.config.aug_max_heads:
                    self.classifier.active[i] += 1
        for m in names:
            metrics.row[f"aug_heads_{m}"] = self.classifier.count(m)
        self._reset_log()
