"""MILES as a method: Eq. 3's losses plus the scheduler `milesbook.miles.MILES` after every epoch
(Guerra-Manzanares & Shamout, IJCNN 2025); and `miles-lab`, the same scheduler on L_AB alone — our
ablation, the fourth cell of the 2 × 2 {L_AB, Eq. 3} × {no scheduling, MILES}."""
from __future__ import annotations

from .base import Aux, EpochMetrics, Hyperparameter, Method, SearchRange, register
from ..miles import MILES, check_hyperparameters

# The paper tunes τ and μ by random search but states no ranges; these are ours. δ seldom stays
# above 0.5 once the weak head learns anything, so a larger τ would switch MILES off.
TAU = Hyperparameter("tau", 0.2, "MILES threshold τ on the utilization gap δ, in [0, 1]",
                     valid=lambda v: 0 <= v <= 1, rule="in [0, 1] (it is the threshold on δ)",
                     search=SearchRange(0.0, 0.5, source="ours (the paper states no range)"))
MU = Hyperparameter("mu", 0.5, "MILES factor μ on the dominant encoder's rate, in (0, 1]",
                    valid=lambda v: 0 < v <= 1, rule="in (0, 1] (it multiplies the dominant encoder's rate)",
                    search=SearchRange(0.1, 1.0, source="ours (the paper states no range)"))


class _Scheduled:
    """The MILES hooks, shared by both cells that schedule: the scheduler is built on the named param
    groups at setup and stepped with the epoch's utilization metrics (read from whatever the method
    reads a modality from: its trained heads, or its fusion-head parts)."""
    hyperparameters = (TAU, MU)

    @classmethod
    def check_options(cls, config) -> None:
        check_hyperparameters(config.tau, config.mu)  # the scheduler's own check and message

    def setup(self, context) -> None:
        super().setup(context)
        self.scheduler = MILES(self.optimizer, tau=self.config.tau, mu=self.config.mu,
                               modalities=list(self.context.modalities))

    def end_epoch(self, metrics: EpochMetrics) -> None:
        self.scheduler.step(metrics.utilization_metrics)
        if len(self.context.modalities) > 2:  # which modality each pair's block slowed: +1 the first, −1 the second
            for (first, second), slowed in self.scheduler.last_pairs.items():
                metrics.row[f"slows_{first}_{second}"] = 1 if slowed == first else -1 if slowed == second else 0

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


@register
class Miles(_Scheduled, Aux):
    """Eq. 3 plus the MILES scheduler (Algorithm 1) after every validation."""
    name = "miles"
    description = ("Eq. 3 plus MILES: after each epoch, the conditional utilization rates decide whether the dominant "
                   "modality's encoder learns at μ times the rate next epoch")
    papers = ("miles2025",)


@register
class MilesLAB(_Scheduled, Method):
    """MILES's scheduling on the multimodal loss L_AB alone — **our ablation, not the paper's method**
    (the paper assumes the auxiliary unimodal losses of Eq. 3). It trains exactly what `vanilla`
    trains, reads each modality from the fusion head's parts W_m z_m + b/M (so the utilization rates
    that drive Algorithm 1 are vanilla's), and trains the same detached linear probes for the
    diagnostic reading of each encoder (`val_acc_head_<m>`; they never move the encoders, but a
    probe shares its encoder's param group, so a slowed encoder's probe trains slower too). With
    `aux` and `miles` it completes the 2 × 2 that separates what the auxiliary losses do from what the
    scheduling does, with and without the other."""
    name = "miles-lab"
    description = "our ablation: the MILES scheduling on the fused loss L_AB alone, without the auxiliary losses"
    papers = ("miles2025",)
