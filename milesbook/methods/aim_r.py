"""AIM-R: a RECONSTRUCTION of AIM from the paper's abstract. It is not the paper's algorithm.

Paper: Shen, Chen & Zhang, "AIM: Adaptive Intra-Network Modulation for Balanced Multimodal Learning",
arXiv 2508.19769 (v1 27 Aug 2025, v3 3 Nov 2025). No official code is public, and the method section
(equations, algorithm, settings) could not be retrieved: only the abstract could. The abstract names
the parts of AIM: PAM (the dominant modality's under-optimized parameters are split off into
Auxiliary Blocks and trained jointly with the weak modality), DAM (the imbalance at each depth sets how
strongly PAM acts there) and DAP (prototypes score each depth of each network). Every formula here is
ours and follows the reconstruction spec `shared/reference/aim.md` (§2–§5). Swap any of them for the
paper's once someone has the PDF.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import UserError
from ..models import MLPEncoder, ResNet, SmallCNN
from .base import EpochMetrics, Hyperparameter, Method, SearchRange, register, require_single_label

STD_EPS = 1e-6         # ε of DAP's standardisation (spec §2)
NORM_EPS = 1e-8        # keeps the relative step of an all-zero channel finite (spec §3.2)
SCORE_SMOOTHING = 0.9  # s̄ ← 0.9 s̄ + 0.1 s (spec §2)


# -- depths: each encoder kind split into stages ------------------------------------------------------

@dataclass
class EncoderStages:
    """An encoder as `rest ∘ stages[L-1] ∘ … ∘ stages[0]`: `stages[l]` maps h^{l-1} (the encoder's
    input for l = 0) to h^l, and `outputs[l]` is the module of the encoder's own forward whose output is
    h^l (where the capture hook goes: a stage container built here is never called by the encoder)."""
    stages: list[nn.Module]
    outputs: list[nn.Module]
    rest: nn.Module


def encoder_stages(encoder: nn.Module, modality: str = "") -> EncoderStages:
    """The depths of an encoder (spec §2: a depth is a stage).

    - SmallCNN: its three conv-BN-ReLU triples (L = 3); rest = pooling + flatten.
    - MLPEncoder: its Linear+ReLU pairs (L = 3; the first also flattens the input); rest = nothing.
    - ResNet: its residual stages layer1, layer2, … (ResNet-18: L = 4), with the stem folded into the
      first; rest = pooling + projection.
    Text encoders (bag of words, BERT) have no stages of that kind and are refused."""
    if isinstance(encoder, SmallCNN):
        net = encoder.net
        starts = [i for i, layer in enumerate(net) if isinstance(layer, nn.Conv2d)]
        ends = starts[1:] + [len(net) - 2]  # the last two layers are pooling and flatten
        stages = [net[s:e] for s, e in zip(starts, ends)]
        return EncoderStages(stages, [net[e - 1] for e in ends], net[ends[-1]:])
    if isinstance(encoder, MLPEncoder):
        net = encoder.net
        pairs = [(i, i + 2) for i, layer in enumerate(net) if isinstance(layer, nn.Linear)]
        stages = [nn.Sequential(nn.Flatten(), *net[s:e]) if s == 0 else net[s:e] for s, e in pairs]
        return EncoderStages(stages, [net[e - 1] for _, e in pairs], nn.Identity())
    if isinstance(encoder, ResNet):
        layers = encoder.layers
        stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool)
        stages = [nn.Sequential(stem, *layers[0]), *layers[1:]]
        # hooks go on each stage's last block, which also runs when a stage is called on its own
        return EncoderStages(stages, [layer[-1] for layer in layers],
                             nn.Sequential(encoder.avgpool, nn.Flatten(), encoder.project))
    where = f" (modality {modality!r})" if modality else ""
    raise UserError(f"aim-r splits encoders into stages and supports the cnn, mlp and resnet encoders; "
                    f"{type(encoder).__name__}{where} is not one of them")


def depth_pairs(depths_a: int, depths_b: int) -> list[tuple[int, int]]:
    """The compared depths (0-based stage of A, of B), matched by relative depth l/L (spec §2): one
    pair per stage of the deeper encoder, the shallower one's stage ⌈j·L/J⌉. Equal depths: (l, l)."""
    deepest = max(depths_a, depths_b)
    return [(math.ceil(j * depths_a / deepest) - 1, math.ceil(j * depths_b / deepest) - 1)
            for j in range(1, deepest + 1)]


# -- pace and masks (spec §3.2) ----------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelUnit:
    """A conv or linear weight of `channels` output channels and the parameters that share its
    channels' mask (its bias; the affine BatchNorm right after it), by name inside their stage."""
    weight: str
    shared: tuple[str, ...]
    channels: int


def channel_units(stage: nn.Module) -> list[ChannelUnit]:
    """Every conv/linear weight of `stage`, in registration order, with its mask-sharing parameters."""
    leaves = [(name, module) for name, module in stage.named_modules() if not list(module.children())]

    def named(prefix, attribute):
        return f"{prefix}.{attribute}" if prefix else attribute

    units = []
    for i, (name, module) in enumerate(leaves):
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        channels = module.weight.shape[0]
        shared = [named(name, "bias")] if module.bias is not None else []
        follower = leaves[i + 1] if i + 1 < len(leaves) else None
        if follower and isinstance(follower[1], nn.modules.batchnorm._BatchNorm) and follower[1].affine \
                and follower[1].num_features == channels:
            shared += [named(follower[0], "weight"), named(follower[0], "bias")]
        units.append(ChannelUnit(named(name, "weight"), tuple(shared), channels))
    return units


def lowest_fraction_mask(pace: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool (C,): True for the round(fraction·C) channels (at least one) of lowest pace π (C,): the
    under-optimized set U. Ties go to the lower channel index."""
    count = min(len(pace), max(1, math.floor(fraction * len(pace) + 0.5)))
    mask = torch.zeros(len(pace), dtype=torch.bool, device=pace.device)
    mask[torch.argsort(pace, stable=True)[:count]] = True
    return mask


def relative_channel_step(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """ρ̃_c = ‖Δθ_c‖ / (‖θ_c‖ + 1e-8) per output channel c, (C,), of a weight (C, ...) before and after
    one optimizer step (‖θ_c‖ of the weight before the step)."""
    moved = (after - before).flatten(1).norm(dim=1)
    return moved / (before.flatten(1).norm(dim=1) + NORM_EPS)


# -- DAP and DAM (spec §2, §4) -----------------------------------------------------------------------

def descriptor(h: torch.Tensor) -> torch.Tensor:
    """û (N, C): a stage output (N, C, ...) averaged over its spatial dims (none for (N, C)), L2-normed."""
    u = h.flatten(2).mean(2) if h.dim() > 2 else h
    return F.normalize(u, dim=1)


def dap_probabilities(descriptors: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """q(k|x) (N, K) = softmax_k((c_k − mean_j c_j) / (std_j c_j + ε)) with c = ⟨û, P_k⟩ from unit
    descriptors (N, C) and unit prototypes (K, C); std over the K classes (population), τ = 1."""
    cos = descriptors @ prototypes.t()
    standard = (cos - cos.mean(1, keepdim=True)) / (cos.std(1, correction=0, keepdim=True) + STD_EPS)
    return standard.softmax(1)


def dap_score(descriptors: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """s (0-d): the batch mean of q(y_i | x_i), the probability DAP gives the true class."""
    return dap_probabilities(descriptors, prototypes).gather(1, labels[:, None]).mean()


def dam_strength(score_a: torch.Tensor, score_b: torch.Tensor, gain: float,
                 deadzone: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(γ, lead), each (J,), from the smoothed scores s̄_a, s̄_b (J,) of the compared depths:
    I = |log(s̄_a / s̄_b)|, γ = tanh(κ I) where I > δ else 0; lead = +1 where A dominates (s̄_a > s̄_b),
    −1 where B does, 0 on a tie."""
    log_ratio = torch.log(score_a.clamp_min(1e-12)) - torch.log(score_b.clamp_min(1e-12))
    imbalance = log_ratio.abs()
    gamma = torch.where(imbalance > deadzone, torch.tanh(gain * imbalance), torch.zeros_like(imbalance))
    return gamma, torch.sign(log_ratio)


# -- the auxiliary blocks (spec §3.3) ----------------------------------------------------------------

def auxiliary_parameters(stage: nn.Module, units: list[ChannelUnit], masks: list[torch.Tensor],
                         gamma: float) -> dict[str, torch.Tensor]:
    """θ̃ = M⊙θ + (1 − M)⊙(1 − γ)⊙sg(θ) for every parameter of `stage`, by name: gradient reaches θ
    only in the masked (under-optimized) channels. A parameter in no unit counts as unmasked."""
    channel_mask = {}
    for unit, mask in zip(units, masks):
        for name in (unit.weight, *unit.shared):
            channel_mask[name] = mask
    params = {}
    for name, p in stage.named_parameters():
        degraded = (1 - gamma) * p.detach()
        mask = channel_mask.get(name)
        params[name] = degraded if mask is None else \
            torch.where(mask.view(-1, *[1] * (p.dim() - 1)), p, degraded)
    return params


def detached_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters without gradient, by name: activations still carry gradient through."""
    return {name: p.detach() for name, p in module.named_parameters()}


def cloned_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the module's buffers, so a train-mode pass updates BatchNorm statistics of the copies."""
    return {name: b.clone() for name, b in module.named_buffers()}


# -- the method --------------------------------------------------------------------------------------

SOURCE = "ours (reconstruction)"


@register
class AIMR(Method):
    """AIM-R, a RECONSTRUCTION of AIM (Shen, Chen & Zhang, arXiv 2508.19769) from its abstract alone.
    It is not the paper's algorithm: no official code is public and the method section could not be
    retrieved. Spec: `shared/reference/aim.md`; in the list below, [P] = the abstract says so,
    [L] = borrowed from earlier published code, [R] = our choice.

    Training loss: L_AB + λ Σ_m ℓ_aux,m, the second term only after `aim_warmup` epochs. Modality
    accuracies are read from the fusion head's parts, as in vanilla. Inference is the ordinary full
    model: the auxiliary blocks are views of its weights, and masks, prototypes and paces are dropped.

    - Depths [R]: a depth is a stage (`encoder_stages`). SmallCNN has its 3 conv-BN-ReLU triples;
      MLPEncoder its 3 Linear+ReLU pairs; ResNet its residual stages layer1, layer2, …, with the stem
      folded into the first (ResNet-18: L = 4). Text encoders are refused. Encoders of different
      depths are matched by relative depth l/L (`depth_pairs`).
    - DAP [R, refresh from L]: the descriptor is û = L2-normalised GAP(h_m^l), taken from the loop's
      own forward through hooks. Prototypes P_m^l (K, C_l) are class means of û: before the first
      epoch and after every epoch, in eval mode without gradient, on a tenth of the training batches
      (⌊⌊n/B⌋/10⌋, at least one), shuffled with a generator seeded from (seed, epoch). This is PMR's recipe [L], and the blend
      P ← (1 − μ)F + μP_old applies from the first refresh that has a previous P. Rows are then
      L2-normalised. Score: q = softmax of the per-sample standardised cosines (population std over
      classes, τ = 1), s = the batch mean of q(y|x), smoothed s̄ ← 0.9 s̄ + 0.1 s. s̄ starts at chance,
      1/K, so nothing is modulated before any evidence. A class absent from the sample keeps its
      previous prototype (before the first epoch: the mean of all sampled descriptors).
    - DAM [R; tanh from OGM-GE, L]: I^l = |log(s̄_a^l / s̄_b^l)|, γ^l = tanh(κ I^l) if I^l > δ else 0,
      and the dominant modality is d^l = argmax_m s̄_m^l, decided per depth. γ at a step comes from s̄
      as it stood after the previous step. That lets the active-depth plan reach the host through a
      non-blocking copy with no device stall; with 0.9 smoothing it misses one 10% term.
    - Pace [R]: for each output channel of every conv/linear weight, ρ̃ = ‖Δθ_c‖ / (‖θ_c‖ + 1e-8) is
      measured on the real step (snapshot in `after_backward`, compared in `after_step`), so it holds for
      any optimizer. π ← β π + (1 − β) ρ̃, starting from 0 (the ranking within a tensor needs no bias
      correction). Only the weight's channel enters ρ̃. Its bias and the BatchNorm right after it share
      its mask.
    - Masks [R]: U = the round(ρ·C) channels (at least 1) of lowest π in each weight tensor,
      recomputed after every epoch. They are all ones until the first recomputation (then the
      auxiliary block is the whole block).
    - Auxiliary path [R]: for each modality m that dominates some active depth (γ > 0), start from the
      detached main-pass h_m^{l0−1} (the input if l0 is the first stage). Run the active stages as
      θ̃ = M⊙θ + (1 − M)⊙(1 − γ)⊙sg(θ) (γ of a stage in several pairs: the largest). Run the other stages
      and the rest (pooling, projection) with detached parameters. All of this goes through
      `torch.func.functional_call` with cloned buffers, so BatchNorm uses batch statistics and leaves
      the running ones untouched. The result z̃_m is fused with the other modality's main-pass z_m'
      (not detached) through the same fusion head, and ℓ_aux,m = task loss of that fusion.
    - Weak-modality boost (spec §3.6, optional) [R]: after backward, the gradients of the masked
      channels of the weak modality's stage at each active depth are multiplied by (1 + η γ). Default
      η = 0 (off). The spec marks it optional, and with Adam, the package default, a per-channel
      gradient scale is mostly cancelled by the second-moment normalisation. Only a change from step
      to step survives, so its effect cannot be separated from noise without the paper's own
      ablation. Try η = 1 with `--optimizer sgd`.
    - Deviations and limits: two modalities only (DAM compares a pair of scores per depth). Single-label
      tasks only (a prototype per class needs one class per sample). Both fusions. We use the package's
      optimizer (Adam by default, or SGD without weight decay) and its schedule, not the SGD /
      StepLR protocol common in this line of work [L]. There is no modulation end epoch. Unimodal heads
      stay linear probes and are not trained into the encoders.
    Cost: one extra partial forward and backward pass of the dominant encoder(s) from the first active
    stage on, plus a copy of the encoder weights per step for the pace.
    History columns (j = compared depth, 1-based): `aim_score_<m>_<j>` (s̄ at the epoch's end),
    `aim_gamma_<j>` (the epoch's mean γ), `aim_dominant_<a>_<j>` (share of steps in which the first
    modality dominated depth j; γ and dominance are logged in the warm-up too, where they are
    measured but not applied, and dominance counts depths inside the dead-zone), `aim_active` (share
    of steps with an auxiliary loss) and `aim_masked` (share of channels in U during the epoch).
    """
    name = "aim-r"
    description = ("our reconstruction of AIM from its abstract (no method section or code is public): the dominant "
                   "encoder's slowest channels trained through auxiliary blocks")
    papers = ("shen2025aim",)
    model_parts = ("encoders", "fusion_head", "fusion_kind")
    max_modalities = 2
    report_note = "reconstruction"  # of AIM from its abstract: never the paper's numbers
    hyperparameters = (
        Hyperparameter("aim_fraction", 0.5, "AIM-R's fraction ρ of each weight's channels counted as "
                       "under-optimized (lowest update pace)", valid=lambda v: 0 < v <= 1, rule="in (0, 1]",
                       search=SearchRange(0.2, 0.7, source=SOURCE)),
        Hyperparameter("aim_gain", 1.0, "AIM-R's DAM gain κ: γ = tanh(κ·|log(s̄_a/s̄_b)|)",
                       valid=lambda v: v > 0, rule="> 0", search=SearchRange(0.5, 3.0, log=True, source=SOURCE)),
        Hyperparameter("aim_deadzone", 0.05, "AIM-R's DAM dead-zone δ: depths with |log(s̄_a/s̄_b)| ≤ δ "
                       "are left alone", valid=lambda v: v >= 0, rule="≥ 0"),
        Hyperparameter("aim_weight", 1.0, "AIM-R's weight λ of the auxiliary-block losses",
                       valid=lambda v: v > 0, rule="> 0", search=SearchRange(0.5, 2.0, log=True, source=SOURCE)),
        Hyperparameter("aim_pace_momentum", 0.99, "AIM-R's EMA factor β of the per-channel update pace π",
                       valid=lambda v: 0 <= v < 1, rule="in [0, 1)"),
        Hyperparameter("aim_prototype_momentum", 0.2, "AIM-R's DAP prototype momentum μ: P ← (1 − μ) P_new + μ P_old",
                       valid=lambda v: 0 <= v < 1, rule="in [0, 1)"),
        Hyperparameter("aim_warmup", 1, "AIM-R's warm-up: epochs trained on L_AB alone before the auxiliary blocks",
                       valid=lambda v: v >= 0 and int(v) == v, rule="an integer ≥ 0"),
        Hyperparameter("aim_boost", 0.0, "AIM-R's optional weak-modality boost η: the weak stage's "
                       "under-optimized gradients × (1 + η γ) (0: off)", valid=lambda v: v >= 0, rule="≥ 0"),
    )

    def needs(self) -> dict[str, str]:
        return {"training_sample": "its per-depth prototypes are built on a tenth of the training split "
                                   "(pass train_loader=)"}

    def setup(self, context) -> None:
        super().setup(context)
        model = self.model
        if len(self.context.modalities) != 2:
            raise UserError(f"aim-r compares two modalities depth by depth and needs exactly 2; "
                            f"got {list(self.context.modalities)}")
        require_single_label("aim-r", context, "builds one prototype per class")
        self.device = context.device
        self.num_classes = context.num_classes
        self.depths = {m: encoder_stages(model.encoders[m], m) for m in self.context.modalities}
        self.units = {m: [channel_units(stage) for stage in split.stages] for m, split in self.depths.items()}
        a, b = self.context.modalities
        self.pairs = depth_pairs(len(self.depths[a].stages), len(self.depths[b].stages))
        self._pair_index = {m: torch.tensor([p[i] for p in self.pairs], device=self.device)
                            for i, m in enumerate((a, b))}
        self.scores = {m: torch.full((len(split.stages),), 1 / self.num_classes, device=self.device)
                       for m, split in self.depths.items()}
        self.pace = {m: [[torch.zeros(u.channels, device=self.device) for u in units] for units in stages]
                     for m, stages in self.units.items()}
        self.masks = {m: [[torch.ones(u.channels, dtype=torch.bool, device=self.device) for u in units]
                          for units in stages] for m, stages in self.units.items()}
        self.prototypes: dict[str, list[torch.Tensor]] | None = None
        # flat views for the per-step pace update (the pace tensors are updated in place)
        self._paced = [(split.stages[l].get_parameter(u.weight), self.pace[m][l][i])
                       for m, split in self.depths.items() for l, units in enumerate(self.units[m])
                       for i, u in enumerate(units)]
        self._snapshot = [torch.empty_like(w) for w, _ in self._paced]
        self._captured = {m: [None] * len(split.stages) for m, split in self.depths.items()}
        self._inputs: dict[str, torch.Tensor | None] = {m: None for m in self.context.modalities}
        self._recording, self._refreshing = True, False
        self._pending, self._ready, self._host_plan = None, None, None
        self._plan: tuple[list[float], list[float]] | None = None
        self.epoch = 0
        for m, split in self.depths.items():
            model.encoders[m].register_forward_pre_hook(self._input_hook(m))
            for l, module in enumerate(split.outputs):
                module.register_forward_hook(self._output_hook(m, l))
        self._reset_log()

    # -- capture of the loop's own forward ------------------------------------------------------------
    def _recording_now(self) -> bool:
        # training forwards run with gradient, evaluation without: only the former and the prototype
        # pass are kept (and never the auxiliary pass, which calls the same modules)
        return self._recording and (torch.is_grad_enabled() or self._refreshing)

    def _input_hook(self, m):
        def hook(module, args):
            if self._recording_now():
                self._inputs[m] = args[0].detach()
        return hook

    def _output_hook(self, m, l):
        def hook(module, args, output):
            if self._recording_now():
                self._captured[m][l] = output.detach()
        return hook

    def _release_captures(self) -> None:
        for m in self._captured:
            self._captured[m] = [None] * len(self._captured[m])
            self._inputs[m] = None

    # -- DAP --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _refresh_prototypes(self, epoch: int) -> None:
        """P_m^l ← normalise((1 − μ) F + μ P_old) with F the class means of û on a tenth of the shuffled training batches."""
        context, model, batch = self.context, self.model, self.context.batch_size
        batches = max(1, (context.train_size // batch) // 10)
        generator = torch.Generator().manual_seed(context.seed * 100_003 + epoch)
        counts = torch.zeros(self.num_classes, device=self.device)
        sums: dict[str, list[torch.Tensor]] = {}
        was_training = model.training
        model.eval()
        self._refreshing = True
        try:
            # in batches: 10% of a large split may not fit at once
            for x, y in context.training_sample(batches * batch, generator, batch_size=batch):
                model(x)
                counts += torch.bincount(y, minlength=self.num_classes)
                for m, hs in self._captured.items():
                    us = [descriptor(h) for h in hs]
                    if m not in sums:
                        sums[m] = [torch.zeros(self.num_classes, u.shape[1], device=self.device) for u in us]
                    for total, u in zip(sums[m], us):
                        total.index_add_(0, y, u)
        finally:
            self._refreshing = False
            model.train(was_training)
            self._release_captures()
        seen = counts[:, None] > 0
        mu, fresh = self.config.aim_prototype_momentum, {}
        for m, totals in sums.items():
            fresh[m] = []
            for l, total in enumerate(totals):
                previous = self.prototypes[m][l] if self.prototypes is not None else None
                fallback = previous if previous is not None else (total.sum(0) / counts.sum()).expand_as(total)
                means = torch.where(seen, total / counts.clamp(min=1)[:, None], fallback)
                if previous is not None:
                    means = (1 - mu) * means + mu * previous
                fresh[m].append(F.normalize(means, dim=1))
        self.prototypes = fresh

    @torch.no_grad()
    def _update_scores(self, labels: torch.Tensor) -> None:
        for m, hs in self._captured.items():
            fresh = torch.stack([dap_score(descriptor(h), p, labels) for h, p in zip(hs, self.prototypes[m])])
            self.scores[m].mul_(SCORE_SMOOTHING).add_(fresh, alpha=1 - SCORE_SMOOTHING)

    # -- DAM and the per-step plan --------------------------------------------------------------------
    def _plan_on_device(self) -> torch.Tensor:
        """(2, J): DAM's γ of each compared depth, and its lead (+1: first modality dominates)."""
        a, b = self.context.modalities
        gamma, lead = dam_strength(self.scores[a][self._pair_index[a]], self.scores[b][self._pair_index[b]],
                                   self.config.aim_gain, self.config.aim_deadzone)
        return torch.stack([gamma, lead])

    def _take_plan(self) -> tuple[list[float], list[float]]:
        if self._pending is None:  # first step after setup or resume: read it now
            return tuple(self._plan_on_device().tolist())
        if self._ready is not None:
            self._ready.synchronize()
        return tuple(self._pending.tolist())

    def _send_plan(self) -> None:
        """Start copying the next step's plan to the host; it is read one step later."""
        plan = self._plan_on_device()
        if self.device.type != "cuda":
            self._pending = plan
            return
        if self._host_plan is None:
            self._host_plan = torch.empty(plan.shape, pin_memory=True)
        self._host_plan.copy_(plan, non_blocking=True)
        self._ready = torch.cuda.Event()
        self._ready.record()
        self._pending = self._host_plan

    def stage_strengths(self, gammas: list[float], leads: list[float]) -> dict[str, list[float]]:
        """{m: γ of each of m's stages}: the γ of the compared depths m dominates (the largest where a
        stage is in several pairs), 0 at the others."""
        a, b = self.context.modalities
        strengths = {m: [0.0] * len(self.depths[m].stages) for m in (a, b)}
        for (la, lb), gamma, lead in zip(self.pairs, gammas, leads):
            if gamma > 0 and lead != 0:
                m, l = (a, la) if lead > 0 else (b, lb)
                strengths[m][l] = max(strengths[m][l], gamma)
        return strengths

    # -- the loss -------------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.prototypes is None:  # before the first epoch (a resumed run has them from its checkpoint)
            self._refresh_prototypes(epoch=0)

    def loss(self, out, labels, loss_fn) -> torch.Tensor:
        main = loss_fn(out.fusion, labels)
        gammas, leads = self._take_plan()  # from s̄ after the previous step
        self._update_scores(labels)
        self._send_plan()
        self.steps += 1
        for j, (gamma, lead) in enumerate(zip(gammas, leads)):
            self.gamma_sum[j] += gamma
            self.first_leads[j] += lead > 0
        self._plan = None
        if self.epoch <= self.config.aim_warmup:
            self._release_captures()
            return main
        self._plan = (gammas, leads)
        strengths = self.stage_strengths(gammas, leads)
        if not any(g > 0 for values in strengths.values() for g in values):
            self._release_captures()
            return main
        auxiliary = self.auxiliary_loss(out, labels, loss_fn, strengths)
        self._release_captures()
        self.active_steps += 1
        return main + self.config.aim_weight * auxiliary

    def auxiliary_loss(self, out, labels, loss_fn, strengths: dict[str, list[float]]) -> torch.Tensor:
        """Σ_m ℓ_aux,m over the modalities with a stage of strength > 0: the task loss of the fusion head
        on (z̃_m, the other modality's main-pass z). Needs the captures of the forward that made `out`."""
        model, total = self.model, torch.zeros((), device=out.fusion.device)
        self._recording = False  # the auxiliary pass calls the hooked modules too
        try:
            for m in self.context.modalities:
                active = [l for l, g in enumerate(strengths[m]) if g > 0]
                if not active:
                    continue
                z = self._auxiliary_features(m, strengths[m], active[0])
                fused = [z if k == m else out.features[k] for k in self.context.modalities]
                fused = torch.cat(fused, 1) if model.fusion_kind == "concat" else sum(fused)
                total = total + loss_fn(model.fusion_head(fused), labels)
        finally:
            self._recording = True
        return total

    def _auxiliary_features(self, m: str, strengths: list[float], first: int) -> torch.Tensor:
        """z̃_m (N, d): the encoder from stage `first` on, active stages as auxiliary blocks."""
        split = self.depths[m]
        x = self._inputs[m] if first == 0 else self._captured[m][first - 1]
        for l in range(first, len(split.stages)):
            stage = split.stages[l]
            params = auxiliary_parameters(stage, self.units[m][l], self.masks[m][l], strengths[l]) \
                if strengths[l] > 0 else detached_parameters(stage)
            x = functional_call(stage, {**params, **cloned_buffers(stage)}, (x,))
        return functional_call(split.rest, {**detached_parameters(split.rest), **cloned_buffers(split.rest)}, (x,))

    # -- gradients and pace ---------------------------------------------------------------------------
    @torch.no_grad()
    def after_backward(self, out, labels, epoch: int) -> None:
        if self._plan is not None and self.config.aim_boost > 0:
            self._boost_weak(*self._plan)
        torch._foreach_copy_(self._snapshot, [w for w, _ in self._paced])

    def _boost_weak(self, gammas: list[float], leads: list[float]) -> None:
        """The weak modality's masked-channel gradients × (1 + η γ) at each active compared depth."""
        a, b = self.context.modalities
        factors: dict[tuple[str, int], float] = {}
        for (la, lb), gamma, lead in zip(self.pairs, gammas, leads):
            if gamma > 0 and lead != 0:
                key = (b, lb) if lead > 0 else (a, la)
                factors[key] = max(factors.get(key, 1.0), 1 + self.config.aim_boost * gamma)
        for (m, l), factor in factors.items():
            stage = self.depths[m].stages[l]
            for unit, mask in zip(self.units[m][l], self.masks[m][l]):
                for name in (unit.weight, *unit.shared):
                    p = stage.get_parameter(name)
                    if p.grad is not None:
                        scale = 1 + (factor - 1) * mask.to(p.grad.dtype)
                        p.grad.mul_(scale.view(-1, *[1] * (p.dim() - 1)))

    @torch.no_grad()
    def after_step(self, epoch: int) -> None:
        beta = self.config.aim_pace_momentum
        for (weight, pace), before in zip(self._paced, self._snapshot):
            pace.mul_(beta).add_(relative_channel_step(before, weight), alpha=1 - beta)

    # -- the epoch's end ------------------------------------------------------------------------------
    def _reset_log(self) -> None:
        self.steps, self.active_steps = 0, 0
        self.gamma_sum = [0.0] * len(self.pairs)
        self.first_leads = [0] * len(self.pairs)

    def masked_share(self) -> float:
        """Share of all paced channels in U."""
        masks = [mask for stages in self.masks.values() for units in stages for mask in units]
        return float(sum(int(mask.sum()) for mask in masks) / sum(len(mask) for mask in masks))

    def refresh_masks(self) -> None:
        """U of every weight tensor from the current paces (spec §3.2)."""
        for m, stages in self.pace.items():
            self.masks[m] = [[lowest_fraction_mask(pace, self.config.aim_fraction) for pace in units]
                             for units in stages]

    def end_epoch(self, metrics: EpochMetrics) -> None:
        a, b = self.context.modalities
        row, steps = metrics.row, max(self.steps, 1)
        scores = {m: self.scores[m].tolist() for m in (a, b)}
        for j, (la, lb) in enumerate(self.pairs, start=1):
            row[f"aim_score_{a}_{j}"] = scores[a][la]
            row[f"aim_score_{b}_{j}"] = scores[b][lb]
            row[f"aim_gamma_{j}"] = self.gamma_sum[j - 1] / steps
            row[f"aim_dominant_{a}_{j}"] = self.first_leads[j - 1] / steps
        row["aim_active"] = self.active_steps / steps
        row["aim_masked"] = self.masked_share()  # the masks in force during the epoch
        self.refresh_masks()
        self._refresh_prototypes(metrics.epoch)
        self._reset_log()

    def state_dict(self) -> dict:
        def cpu(nested):
            return {m: [[t.cpu() for t in units] for units in stages] for m, stages in nested.items()}
        return {"prototypes": {m: [p.cpu() for p in ps] for m, ps in self.prototypes.items()}
                if self.prototypes is not None else None,
                "scores": {m: s.cpu() for m, s in self.scores.items()},
                "pace": cpu(self.pace), "masks": cpu(self.masks)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        saved = state.get("prototypes")
        self.prototypes = {m: [p.to(self.device) for p in ps] for m, ps in saved.items()} if saved else None
        for m, s in state["scores"].items():
            self.scores[m].copy_(s)
        for m, stages in state["pace"].items():  # in place: `_paced` holds these tensors
            for mine, theirs in zip(self.pace[m], stages):
                for pace, saved_pace in zip(mine, theirs):
                    pace.copy_(saved_pace)
        self.masks = {m: [[t.to(self.device) for t in units] for units in stages]
                      for m, stages in state["masks"].items()}
        self._pending, self._ready = None, None
