"""MILES: the Modality-Informed Learning ratE Scheduler (Guerra-Manzanares & Shamout, IJCNN 2025).

After every epoch MILES measures how much each modality contributes to the fused prediction (the
conditional utilization rate, Eq. 4), and when the two contributions differ by more than a threshold
τ (Eq. 5) it slows the encoder of the dominant modality to μ times the global rate for the next epoch.

Three layers, each usable on its own:
- `conditional_utilization` and `utilization_gap`: the two equations;
- `decide`: Algorithm 1 as a pure function of (u_A, u_B, τ, μ);
- `MILES`: a scheduler that feels like `torch.optim.lr_scheduler` and applies `decide` to an
  optimizer whose param groups are named (`"fusion"` and one per modality).

Beyond two modalities (our generalization of the paper's §VII sketch, not the paper's method):
`utilization_without` gives u_m from the metric of the model without modality m, and `decide_many`
applies Algorithm 1 to every pair; at N = 2 both reduce exactly to Eq. 4 and `decide`.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from .errors import UserError


def conditional_utilization(metric_fusion: float, metric_a: float, metric_b: float) -> tuple[float, float]:
    """Eq. 4: (u_A, u_B) from the fused metric M(ŷ_AB) and each modality's metric M(ŷ_A), M(ŷ_B).

    u_A = (M_AB − M_B) / M_AB is what modality A adds to a model that already has B, relative to the
    fused score; likewise u_B. Metrics are in [0, 1] (accuracy or F1 over a whole split). When the
    fused metric is 0 there is nothing to share out, and both rates are 0 (so MILES takes no action).
    """
    u = utilization_without(metric_fusion, {"A": metric_b, "B": metric_a})  # without A is B alone
    return u["A"], u["B"]


def utilization_without(metric_all: float, metric_without: Mapping[str, float]) -> dict[str, float]:
    """u_m = (M_all − M_{−m}) / M_all for every modality m: what m adds to the model made of all the
    others, relative to the fused score. `metric_without[m]` is M_{−m}, the metric of the logits of
    every modality but m (their sum). At N = 2, M_{−A} = M_B and this is Eq. 4. A fused metric of 0
    gives every rate 0 (no action)."""
    for name, value in (("fusion", metric_all), *((f"the model without {m}", v) for m, v in metric_without.items())):
        if not math.isfinite(value):
            raise ValueError(f"metric of {name} is {value}; utilization needs finite metrics")
    if metric_all == 0:
        return {m: 0.0 for m in metric_without}
    return {m: (metric_all - without) / metric_all for m, without in metric_without.items()}


def metrics_without(metrics: Mapping[str, float], modalities: Sequence[str]) -> dict[str, float]:
    """{m: M_{−m}}, the metric of the model without each modality: with two modalities the other one's
    metric (M_{−A} = M_B, Eq. 4); with more, `metrics["without_<m>"]` (the others' summed logits)."""
    if len(modalities) == 2:
        a, b = modalities
        return {a: float(metrics[b]), b: float(metrics[a])}
    return {m: float(metrics[f"without_{m}"]) for m in modalities}


def utilization_gap(u_a: float, u_b: float) -> float:
    """Eq. 5: δ_AB = |u_A − u_B|. It equals |M_A − M_B| / M_AB, so it can exceed 1 (the paper says
    δ ∈ [0, 1], which holds only while M_AB ≥ |M_A − M_B|)."""
    return abs(u_a - u_b)


def check_hyperparameters(tau: float, mu: float) -> None:
    """Raise a UserError unless τ ∈ [0, 1] and μ ∈ (0, 1]."""
    if not (0.0 <= tau <= 1.0):
        raise UserError(f"tau must be in [0, 1] (it is the threshold on δ), got {tau}")
    if not (0.0 < mu <= 1.0):
        raise UserError(f"mu must be in (0, 1] (it multiplies the dominant encoder's rate), got {mu}")


def decide(u_a: float, u_b: float, tau: float, mu: float) -> tuple[float, float]:
    """Algorithm 1: the learning-rate multipliers (factor_A, factor_B) for the next epoch.

    Each factor is 1.0 (train at the global rate α) or `mu` (slowed to μ·α). At most one encoder is
    slowed in an epoch, and the other is explicitly back at α: the paper's branches 2–4 each name one
    rate only, and we read the other as reset to α ("only one modality's learning rate is adjusted per
    epoch"). Slowing is never cumulative: a rate is μ·α, never μ²·α.

    1. δ ≤ τ, or both u < 0          → (1, 1)   no action
    2. u_A > 0 and u_B < 0           → (μ, 1)   A dominates
    3. u_A < 0 and u_B > 0           → (1, μ)   B dominates
    4. otherwise (both ≥ 0, or one exactly 0): slow the modality with the larger u;
       on u_A == u_B this is unreachable (δ = 0 ≤ τ), and u_A = 0 > u_B slows A.
    """
    check_hyperparameters(tau, mu)
    if not (math.isfinite(u_a) and math.isfinite(u_b)):
        raise ValueError(f"utilization rates must be finite, got u_A={u_a}, u_B={u_b}")
    delta = utilization_gap(u_a, u_b)
    if delta <= tau or (u_a < 0 and u_b < 0):
        return 1.0, 1.0
    if u_a > 0 and u_b < 0:
        return mu, 1.0
    if u_a < 0 and u_b > 0:
        return 1.0, mu
    if u_a < u_b:
        return 1.0, mu
    return mu, 1.0


def pairs_of(modalities: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair (i, j), i before j in `modalities`' order."""
    return [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1:]]


def pair_decisions(u: Mapping[str, float], tau: float, mu: float) -> dict[tuple[str, str], tuple[float, float]]:
    """Algorithm 1's block on every pair: {(i, j): decide(u_i, u_j, τ, μ)}, pairs in `u`'s order."""
    return {(a, b): decide(u[a], u[b], tau, mu) for a, b in pairs_of(list(u))}


def decide_many(u: Mapping[str, float], tau: float, mu: float) -> dict[str, float]:
    """Algorithm 1 for N ≥ 2 modalities (our generalization of the paper's §VII sketch): apply `decide`
    to every pair (u_i, u_j); a modality is slowed for the next epoch if any pair's block slows it. A
    slowed modality runs at μ·α — never μ²·α, however many pairs slow it — and every other one at α.
    Returns {modality: 1.0 or μ}; at N = 2 it is exactly `decide`. Several modalities may be slowed
    at once (in a chain A > B > C, both A and B are slowed by their pairs with C)."""
    if len(u) < 2:
        raise ValueError(f"decide_many needs at least two modalities, got {list(u)}")
    check_hyperparameters(tau, mu)
    return _factors(u, pair_decisions(u, tau, mu), mu)


def _factors(u: Mapping[str, float], decisions: Mapping, mu: float) -> dict[str, float]:
    """{modality: μ if any pair's decision slowed it, else 1.0}."""
    slowed = {m for pair, factors in decisions.items() for m, factor in zip(pair, factors) if factor < 1.0}
    return {m: mu if m in slowed else 1.0 for m in u}


def _set_lr(group: dict, value: float) -> None:
    # A learning rate held as a tensor (e.g. for a captured CUDA graph) must be changed in place.
    if hasattr(group["lr"], "fill_"):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def _lr_value(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item()) if hasattr(lr, "item") else float(lr)


class MILES:
    """Modality-informed learning-rate scheduler over an optimizer with named param groups.

    The optimizer must have a group named `fusion_group` (the fusion head, always at its base rate
    α_AB) and one group per modality (that modality's encoder and unimodal head). Two modalities are
    Algorithm 1 itself; more use `decide_many` (every pair's block; ours, not the paper's).

    Usage, once per epoch after validation::

        scheduler = MILES(optimizer, tau=0.2, mu=0.5)
        for epoch in range(epochs):
            train_one_epoch(...)
            scheduler.step({"fusion": acc_ab, "image": acc_image, "audio": acc_audio})

    Like `ReduceLROnPlateau`, `step` takes the epoch's metrics (accuracy or F1 in [0, 1], computed over
    a whole split) and sets the rates used in the *next* epoch. With more than two modalities it also
    needs, for every modality m, `"without_<m>"`: M_{−m}, the metric of the other modalities' summed
    logits (with two, M_{−A} is M_B and may be left out). Construction changes no rate. A slowed
    group runs at μ times its own base rate (its rate when the scheduler was built; equal to μ·α_AB
    when every group starts at the global rate).

    After `step`, `last_utilization` holds {modality: u}, `last_delta` holds δ (with more than two
    modalities max u − min u), `last_deltas` each pair's δ_ij {"i-j": δ}, `last_pairs` the modality
    each pair's block slowed {(i, j): name or None}, and `last_factors` {modality: multiplier in effect
    for the next epoch}.
    """

    def __init__(self, optimizer, tau: float = 0.2, mu: float = 0.5,
                 modalities: Sequence[str] | None = None, fusion_group: str = "fusion"):
        check_hyperparameters(tau, mu)
        names = [group.get("name") for group in optimizer.param_groups]
        if fusion_group not in names:
            raise UserError(f"MILES needs a param group named {fusion_group!r}; the optimizer's groups "
                            f"are named {names}")
        if modalities is None:
            modalities = [n for n in names if n != fusion_group]
        modalities = list(modalities)
        missing = [m for m in modalities if m not in names]
        if missing:
            raise UserError(f"MILES: no param group named {missing}; the optimizer's groups are {names}")
        if len(modalities) < 2:
            raise UserError(f"MILES schedules two or more modalities (Algorithm 1 on each pair), got {modalities}")
        self.optimizer = optimizer
        self.tau, self.mu = float(tau), float(mu)
        self.fusion_group = fusion_group
        self.modalities = modalities
        self.base_lrs = [_lr_value(group) for group in optimizer.param_groups]
        self.last_epoch = 0
        self.last_factors = {m: 1.0 for m in modalities}
        self.last_utilization = {m: float("nan") for m in modalities}
        self.last_delta = float("nan")
        self.last_deltas = {f"{a}-{b}": float("nan") for a, b in pairs_of(modalities)}
        self.last_pairs: dict[tuple[str, str], str | None] = {pair: None for pair in pairs_of(modalities)}

    def _group_index(self, name: str) -> int:
        return next(i for i, g in enumerate(self.optimizer.param_groups) if g.get("name") == name)

    def step(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Read one epoch's metrics {fusion_group: M_all, modality: M_m, ...; with more than two
        modalities also "without_<m>": M_{−m}}, set the next epoch's rates, and return the factors
        {modality: 1.0 or μ}."""
        needed = [self.fusion_group, *self.modalities]
        if len(self.modalities) > 2:
            needed += [f"without_{m}" for m in self.modalities]
        missing = [k for k in needed if k not in metrics]
        if missing:
            raise ValueError(f"MILES.step needs metrics for {missing}; got keys {sorted(metrics)}")
        u = utilization_without(float(metrics[self.fusion_group]), metrics_without(metrics, self.modalities))
        self.last_utilization = u
        self.last_deltas = {f"{a}-{b}": utilization_gap(u[a], u[b]) for a, b in pairs_of(self.modalities)}
        self.last_delta = max(u.values()) - min(u.values())
        decisions = pair_decisions(u, self.tau, self.mu)
        self.last_factors = _factors(u, decisions, self.mu)
        self.last_pairs = {(a, b): a if fa < 1 else b if fb < 1 else None for (a, b), (fa, fb) in decisions.items()}
        for name, factor in self.last_factors.items():
            i = self._group_index(name)
            _set_lr(self.optimizer.param_groups[i], self.base_lrs[i] * factor)
        self.last_epoch += 1
        return dict(self.last_factors)

    def get_last_lr(self) -> list[float]:
        """The current rate of every param group, in the optimizer's order (as torch schedulers)."""
        return [_lr_value(group) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything but the optimizer (which saves its own rates)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)
