"""MILES: Eq. 4–5 on hand-computed numbers, every branch of Algorithm 1, and the scheduler API."""
import io
import math

import pytest
import torch

from milesbook.errors import UserError
from milesbook.miles import (MILES, conditional_utilization, decide, decide_many, utilization_gap,
                             utilization_without)

TAU, MU = 0.2, 0.5


def test_utilization_hand_computed():
    # M_AB = 0.8, M_A = 0.6, M_B = 0.2: u_A = (0.8 - 0.2) / 0.8, u_B = (0.8 - 0.6) / 0.8
    u_a, u_b = conditional_utilization(0.8, 0.6, 0.2)
    assert u_a == pytest.approx(0.75) and u_b == pytest.approx(0.25)
    assert utilization_gap(u_a, u_b) == pytest.approx(0.5)


def test_utilization_fusion_zero_is_guarded():
    assert conditional_utilization(0.0, 0.3, 0.1) == (0.0, 0.0)


def test_delta_can_exceed_one():
    # M_AB < |M_A - M_B|: u_A = (0.4 - 0.1)/0.4 = 0.75, u_B = (0.4 - 0.9)/0.4 = -1.25
    u_a, u_b = conditional_utilization(0.4, 0.9, 0.1)
    assert (u_a, u_b) == (pytest.approx(0.75), pytest.approx(-1.25))
    assert utilization_gap(u_a, u_b) == pytest.approx(2.0)


@pytest.mark.parametrize("m_ab,m_a,m_b", [(0.9, 0.7, 0.3), (0.5, 0.6, 0.1), (0.99, 0.2, 0.95)])
def test_gap_equals_metric_difference_over_fusion(m_ab, m_a, m_b):
    u_a, u_b = conditional_utilization(m_ab, m_a, m_b)
    assert u_a - u_b == pytest.approx((m_a - m_b) / m_ab)


def test_utilization_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        conditional_utilization(0.9, float("nan"), 0.5)


@pytest.mark.parametrize("u_a,u_b,expected", [
    (0.1, 0.05, (1.0, 1.0)),     # branch 1: δ = 0.05 ≤ τ
    (-0.3, -0.9, (1.0, 1.0)),    # branch 1: both negative although δ = 0.6 > τ
    (0.5, -0.2, (MU, 1.0)),      # branch 2: A dominates
    (-0.2, 0.5, (1.0, MU)),      # branch 3: B dominates
    (0.1, 0.6, (1.0, MU)),       # branch 4: both ≥ 0, u_A < u_B → slow B
    (0.6, 0.1, (MU, 1.0)),       # branch 4: both ≥ 0, u_A > u_B → slow A
])
def test_decide_every_branch(u_a, u_b, expected):
    assert decide(u_a, u_b, TAU, MU) == expected


@pytest.mark.parametrize("u_a,u_b,expected", [
    (0.0, -0.5, (MU, 1.0)),   # u_A exactly 0, u_B < 0 → falls to branch 4 and slows A
    (-0.5, 0.0, (1.0, MU)),   # mirror: slows B
    (0.0, 0.5, (1.0, MU)),    # u_A = 0 < u_B → slows B
    (0.0, 0.0, (1.0, 1.0)),   # δ = 0
])
def test_decide_zero_utilization_edges(u_a, u_b, expected):
    assert decide(u_a, u_b, TAU, MU) == expected


def test_decide_equal_u_is_no_action_even_at_tau_zero():
    assert decide(0.3, 0.3, 0.0, MU) == (1.0, 1.0)
    assert decide(-0.4, -0.4, 0.0, MU) == (1.0, 1.0)


def test_decide_delta_equal_to_tau_is_no_action():
    # 0.5 - 0.25 = 0.25 exactly in binary floating point
    assert decide(0.5, 0.25, 0.25, MU) == (1.0, 1.0)
    assert decide(0.5, 0.25, 0.2499, MU) == (MU, 1.0)


def test_mu_one_never_slows():
    assert decide(0.9, -0.9, 0.0, 1.0) == (1.0, 1.0)


@pytest.mark.parametrize("tau,mu", [(-0.01, 0.5), (1.01, 0.5), (0.2, 0.0), (0.2, 1.5), (0.2, -0.5)])
def test_hyperparameters_out_of_range(tau, mu):
    with pytest.raises(UserError, match="tau|mu"):
        decide(0.5, -0.5, tau, mu)


def _optimizer(lr=1e-3, names=("fusion", "image", "audio")):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in names]
    return torch.optim.Adam([{"params": [p], "name": n, "lr": lr} for p, n in zip(params, names)])


def test_scheduler_changes_nothing_at_construction():
    opt = _optimizer(lr=3e-4)
    sched = MILES(opt, tau=TAU, mu=MU)
    assert sched.get_last_lr() == [3e-4, 3e-4, 3e-4]
    assert [g["lr"] for g in opt.param_groups] == [3e-4, 3e-4, 3e-4]


def test_scheduler_slows_dominant_and_is_not_cumulative():
    opt = _optimizer(lr=1e-3)
    sched = MILES(opt, tau=TAU, mu=MU)
    image_dominant = {"fusion": 0.9, "image": 0.85, "audio": 0.3}  # u_image = 0.667, u_audio = 0.056
    for _ in range(3):
        factors = sched.step(image_dominant)
        assert factors == {"image": MU, "audio": 1.0}
        assert sched.get_last_lr() == pytest.approx([1e-3, 5e-4, 1e-3])  # μ·α every time, never μ²·α
    assert sched.last_utilization["image"] == pytest.approx((0.9 - 0.3) / 0.9)
    assert sched.last_delta == pytest.approx((0.85 - 0.3) / 0.9)
    # balance restored → both back at α; then audio dominant → only audio slowed, image back at α
    sched.step({"fusion": 0.9, "image": 0.8, "audio": 0.75})
    assert sched.get_last_lr() == pytest.approx([1e-3, 1e-3, 1e-3])
    sched.step({"fusion": 0.9, "image": 0.2, "audio": 0.88})
    assert sched.get_last_lr() == pytest.approx([1e-3, 1e-3, 5e-4])
    assert sched.last_epoch == 5


def test_scheduler_state_dict_round_trip_mid_training():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"fusion": torch.nn.Linear(4, 2), "image": torch.nn.Linear(4, 2),
                                 "audio": torch.nn.Linear(4, 2)})

    def make(m):
        opt = torch.optim.Adam([{"params": m[n].parameters(), "name": n, "lr": 1e-2} for n in m])
        return opt, MILES(opt, tau=0.1, mu=0.25)

    opt, sched = make(model)
    metrics = [{"fusion": 0.9, "image": 0.9, "audio": 0.2}, {"fusion": 0.8, "image": 0.5, "audio": 0.7},
               {"fusion": 0.7, "image": 0.6, "audio": 0.6}, {"fusion": 0.9, "image": 0.1, "audio": 0.8}]
    x = torch.randn(8, 4)

    def epoch(o, s, m, metric):
        o.zero_grad()
        sum(layer(x).pow(2).sum() for layer in m.values()).backward()
        o.step()
        s.step(metric)

    epoch(opt, sched, model, metrics[0])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    clone = torch.nn.ModuleDict({n: torch.nn.Linear(4, 2) for n in model})
    clone.load_state_dict(saved["model"])
    opt2, sched2 = make(clone)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert sched2.get_last_lr() == sched.get_last_lr() == pytest.approx([1e-2, 2.5e-3, 1e-2])
    for metric in metrics[1:]:
        epoch(opt, sched, model, metric)
        epoch(opt2, sched2, clone, metric)
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert sched2.last_factors == sched.last_factors
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def test_scheduler_tensor_learning_rates_change_in_place():
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    opt = torch.optim.Adam([{"params": [p], "name": n, "lr": torch.tensor(1e-3)}
                            for p, n in zip(params, ("fusion", "a", "b"))])
    lr_a = opt.param_groups[1]["lr"]
    sched = MILES(opt, tau=0.2, mu=0.5)
    sched.step({"fusion": 0.9, "a": 0.9, "b": 0.1})
    assert opt.param_groups[1]["lr"] is lr_a and lr_a.item() == pytest.approx(5e-4)


def test_scheduler_errors_name_the_problem():
    with pytest.raises(UserError, match="'fusion'"):
        MILES(_optimizer(names=("head", "image", "audio")))
    with pytest.raises(UserError, match="two or more modalities"):
        MILES(_optimizer(names=("fusion", "a")))
    with pytest.raises(ValueError, match="without_c"):  # three modalities need each M_{−m}
        MILES(_optimizer(names=("fusion", "a", "b", "c"))).step({"fusion": 0.9, "a": 0.5, "b": 0.4, "c": 0.1,
                                                                   "without_a": 0.3, "without_b": 0.8})
    with pytest.raises(UserError, match="mu"):
        MILES(_optimizer(), mu=0.0)
    with pytest.raises(ValueError, match="audio"):
        MILES(_optimizer()).step({"fusion": 0.9, "image": 0.5})


def test_scheduler_with_nan_metric_refuses():
    with pytest.raises(ValueError):
        MILES(_optimizer()).step({"fusion": 0.9, "image": math.nan, "audio": 0.5})


# ---- more than two modalities (our generalization) -----------------------------------------------

def test_decide_many_on_two_modalities_is_decide():
    generator = torch.Generator().manual_seed(0)
    for _ in range(2000):
        u_a, u_b = (torch.rand(2, generator=generator) * 2.4 - 1.2).tolist()
        tau = float(torch.rand(1, generator=generator)) * 0.5
        mu = float(torch.rand(1, generator=generator)) * 0.9 + 0.1
        assert tuple(decide_many({"A": u_a, "B": u_b}, tau, mu).values()) == decide(u_a, u_b, tau, mu)
    assert decide_many({"A": 0.0, "B": -0.5}, 0.1, 0.5) == {"A": 0.5, "B": 1.0}  # u = 0 > u_B slows A


@pytest.mark.parametrize("u,tau,slowed", [
    ({"A": 0.5, "B": 0.3, "C": 0.1}, 0.15, {"A", "B"}),     # chain A > B > C: A by AB and AC, B by BC
    ({"A": 0.5, "B": 0.3, "C": 0.1}, 0.25, {"A"}),          # AB, BC within τ; AC slows A
    ({"A": 0.4, "B": 0.35, "C": 0.38}, 0.04, {"A"}),        # AC and BC in no-action while AB slows A
    ({"A": -0.1, "B": -0.2, "C": -0.3}, 0.0, set()),        # all negative: every pair is no-action
    ({"A": 0.3, "B": -0.1, "C": -0.2}, 0.1, {"A"}),         # A vs each negative one; BC both < 0
    ({"A": 0.2, "B": -0.1, "C": 0.5}, 0.1, {"A", "C"}),     # A beats B, C beats A and B
    ({"A": 0.1, "B": 0.12, "C": 0.11}, 0.05, set()),        # every δ ≤ τ
])
def test_decide_many_three_modalities_by_hand(u, tau, slowed):
    factors = decide_many(u, tau, 0.25)
    assert factors == {m: 0.25 if m in slowed else 1.0 for m in u}  # μ, never μ² however many pairs


def test_utilization_without_each_modality_by_hand():
    # M_all = 0.8; without A 0.2, without B 0.7, without C 0.9 (removing C helps)
    u = utilization_without(0.8, {"A": 0.2, "B": 0.7, "C": 0.9})
    assert u == pytest.approx({"A": 0.75, "B": 0.125, "C": -0.125})
    assert utilization_without(0.8, {"A": 0.2, "B": 0.6}) == pytest.approx(dict(zip("AB", conditional_utilization(0.8, 0.6, 0.2))))
    assert utilization_without(0.0, {"A": 0.2, "B": 0.7, "C": 0.1}) == {"A": 0.0, "B": 0.0, "C": 0.0}


def test_scheduler_on_three_named_groups():
    opt = _optimizer(names=("fusion", "image", "audio", "text"))
    sched = MILES(opt, tau=0.1, mu=0.5)
    # u = (0.9 − without) / 0.9: image 0.667, audio 0.111, text 0.0
    factors = sched.step({"fusion": 0.9, "image": 0.8, "audio": 0.5, "text": 0.2,
                          "without_image": 0.3, "without_audio": 0.8, "without_text": 0.9})
    assert factors == {"image": 0.5, "audio": 0.5, "text": 1.0}  # image by both pairs, audio by audio–text
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 5e-4, 5e-4, 1e-3])
    assert sched.last_deltas == pytest.approx({"image-audio": 5 / 9, "image-text": 6 / 9, "audio-text": 1 / 9})
    assert sched.last_delta == pytest.approx(6 / 9)
    state = sched.state_dict()
    again = MILES(_optimizer(names=("fusion", "image", "audio", "text")), tau=0.1, mu=0.5)
    again.load_state_dict(state)
    assert again.last_factors == factors and again.last_utilization == sched.last_utilization
    factors = sched.step({"fusion": 0.9, "image": 0.8, "audio": 0.5, "text": 0.2,
                          "without_image": 0.85, "without_audio": 0.85, "without_text": 0.88})
    assert factors == {"image": 1.0, "audio": 1.0, "text": 1.0}  # every δ ≤ τ: all back at α
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3] * 4)
