"""The methods published after the MILES paper's baselines: each core formula hand-computed on a tiny
case, and the hook that applies it checked against gradients computed independently."""
import math

import pytest
import torch
import torch.nn.functional as F

import milesbook as mb
from milesbook.methods.mmpareto import pareto_gradient, pareto_weights


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


# ---- MMPareto ------------------------------------------------------------------------------------

def test_mmpareto_weights_are_equal_without_conflict():
    alpha_mm, alpha_u = pareto_weights(_t(1.0, 0.0), _t(1.0, 1.0))  # 45°: cosine > 0
    assert (alpha_mm.item(), alpha_u.item()) == (0.5, 0.5)


def test_mmpareto_weights_are_the_min_norm_point_at_a_conflict():
    # 135°: ‖g_mm‖² = 1, ‖g_u‖² = 2, ⟨g_mm, g_u⟩ = −1 → α_mm = (2 + 1) / (1 + 2 + 2) = 0.6
    alpha_mm, alpha_u = pareto_weights(_t(1.0, 0.0), _t(-1.0, 1.0))
    assert alpha_mm.item() == pytest.approx(0.6) and alpha_u.item() == pytest.approx(0.4)
    combined = 0.6 * _t(1.0, 0.0) + 0.4 * _t(-1.0, 1.0)  # the min-norm point: orthogonal to g_mm − g_u
    assert float(combined @ (_t(1.0, 0.0) - _t(-1.0, 1.0))) == pytest.approx(0.0)
    # orthogonal (cosine 0, not > 0) is a conflict too: α_mm = ‖g_u‖² / (‖g_mm‖² + ‖g_u‖²) = 4 / 5
    assert pareto_weights(_t(1.0, 0.0), _t(0.0, 2.0))[0].item() == pytest.approx(0.8)


def test_mmpareto_weights_edge_cases_follow_the_official_solver():
    assert pareto_weights(_t(0.0, 0.0), _t(1.0, -1.0))[0].item() == pytest.approx(0.999)  # ⟨,⟩ ≥ ‖g_mm‖²
    assert pareto_weights(_t(1.0, -1.0), _t(0.0, 0.0))[0].item() == pytest.approx(0.001)  # ⟨,⟩ ≥ ‖g_u‖²
    assert pareto_weights(_t(0.0, 0.0), _t(0.0, 0.0))[0].item() == pytest.approx(0.999)  # both hold: the first wins


def test_mmpareto_gradient_keeps_the_larger_norm_times_gamma():
    g_mm, g_u = _t(1.0, 0.0), _t(-1.0, 1.0)
    new = pareto_gradient(g_mm, g_u, torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64), 1.5)
    combined = _t(0.4, 0.8)  # 2 (0.6 g_mm + 0.4 g_u); ‖s‖ = ‖(0, 1)‖ = 1 > ‖h‖ = 0.894
    assert new.norm().item() == pytest.approx(1.5 * 1.0)
    assert torch.allclose(new / new.norm(), combined / combined.norm())
    # the rescale only ever enlarges: ‖h‖ = 0.4 > ‖s‖ = 0 keeps h, times γ
    opposite = pareto_gradient(_t(1.0, 0.0), _t(-1.0, 0.0), torch.tensor(0.6, dtype=torch.float64),
                               torch.tensor(0.4, dtype=torch.float64), 1.5)
    assert torch.allclose(opposite, 1.5 * _t(0.4, 0.0))
    # no conflict: h = g_mm + g_u = s, so the gradient is γ·s
    same = pareto_gradient(_t(1.0, 2.0), _t(3.0, 1.0), torch.tensor(0.5), torch.tensor(0.5), 1.5)
    assert torch.allclose(same, 1.5 * _t(4.0, 3.0))


def test_mmpareto_hook_sets_encoder_gradients_from_independent_per_loss_gradients(digits):
    gamma = 1.25  # not the default, so a hard-coded γ would fail
    config = mb.TrainConfig(method="mmpareto", epochs=1, mmpareto_gamma=gamma)
    from milesbook.models import build_model
    torch.manual_seed(0)
    model = build_model({m: digits.shapes[m] for m in digits.modalities}, digits.num_classes)
    model.heads["audio"].weight.data.neg_()  # audio's own head now pulls against the fusion head: a conflict
    inputs = {m: digits.splits["train"].inputs[m][:32] for m in digits.modalities}
    labels = digits.splits["train"].labels[:32]
    loss_fn = torch.nn.functional.cross_entropy

    # expected: each encoder's g_mm and g_u by separate backward passes, combined by the two formulas
    out = model(inputs)
    expected, alphas = {}, {}
    for m in digits.modalities:
        params = list(model.encoders[m].parameters())
        g_mm = torch.autograd.grad(loss_fn(out.fusion, labels), params, retain_graph=True)
        g_u = torch.autograd.grad(loss_fn(out.heads[m], labels), params, retain_graph=True)
        alpha_mm, alpha_u = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_u]))
        alphas[m] = alpha_mm.item()
        expected[m] = [pareto_gradient(a, b, alpha_mm, alpha_u, gamma) for a, b in zip(g_mm, g_u)]
    assert alphas["audio"] != pytest.approx(0.5) and alphas["image"] == 0.5  # both branches are exercised
    plain = {name: torch.autograd.grad(loss_fn(out.fusion, labels) + sum(loss_fn(h, labels) for h in out.heads.values()),
                                       list(module.parameters()), retain_graph=True)
             for name, module in (("fusion", model.fusion_head), *[(m, model.heads[m]) for m in digits.modalities])}

    method = mb.methods.build_method(config, digits.modalities)

    from milesbook.methods.context import RunContext
    from milesbook.metrics import task_of
    method.setup(RunContext(model, torch.optim.Adam(model.param_groups(1e-3)), task_of("multiclass"),
                            digits.modalities, digits.num_classes, "cpu", seed=0, batch_size=64))
    model.zero_grad()
    out = model(inputs)
    method.loss(out, labels, loss_fn).backward()
    method.after_backward(out, labels, epoch=1)
    for m in digits.modalities:
        for p, want in zip(model.encoders[m].parameters(), expected[m]):
            assert torch.allclose(p.grad, want, atol=1e-6)
    heads = {"fusion": model.fusion_head, **{m: model.heads[m] for m in digits.modalities}}
    for name, module in heads.items():  # the heads keep their plain gradients
        for p, want in zip(module.parameters(), plain[name]):
            assert torch.allclose(p.grad, want, atol=1e-7)


def test_mmpareto_logs_cosine_and_conflict_share_per_modality(tmp_path, digits):
    summary = mb.train(mb.TrainConfig(method="mmpareto", epochs=2), tmp_path, dataset=digits, progress=False)
    history = mb.read_history(tmp_path)
    for m in digits.modalities:
        assert all(-1 <= r[f"mmpareto_cos_{m}"] <= 1 and 0 <= r[f"mmpareto_conflict_{m}"] <= 1 for r in history)
        assert not math.isnan(history[-1][f"mmpareto_cos_{m}"])
    assert 0 < summary["test_acc_fusion"] <= 1


# ---- PMR -----------------------------------------------------------------------------------------

from milesbook.methods.pmr import pmr_coefficients, prototype_logits  # noqa: E402
from milesbook.methods import EpochMetrics  # noqa: E402
from milesbook.train import Trainer  # noqa: E402


def test_pmr_prototype_logits_are_minus_euclidean_distances():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    prototypes = torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(prototype_logits(features, prototypes), torch.tensor([[0.0, -4.0], [-5.0, -3.0]]))


def test_pmr_gives_the_prototype_loss_to_the_modality_behind():
    labels = torch.tensor([0, 1])
    sure = torch.tensor([[0.0, -10.0], [-10.0, 0.0]])  # softmax of the true class ≈ 1 for both samples
    unsure = torch.tensor([[0.0, 0.0], [0.0, 0.0]])    # 0.5 for both
    beta, lam, ratio = pmr_coefficients(sure, unsure, labels, alpha=2.0)
    expected = 2 * torch.softmax(torch.tensor([0.0, -10.0]), 0)[0] / 1.0  # s_A / s_B = 2·0.99995 / (2·0.5)
    assert ratio.item() == pytest.approx(expected.item()) and (beta.item(), lam.item()) == (0.0, 2.0)  # B behind
    beta, lam, _ = pmr_coefficients(unsure, sure, labels, alpha=2.0)
    assert (beta.item(), lam.item()) == (2.0, 0.0)  # A behind
    beta, lam, ratio = pmr_coefficients(unsure, unsure, labels, alpha=2.0)
    assert ratio.item() == 1.0 and (beta.item(), lam.item()) == (0.0, 0.0)


def test_pmr_prototypes_are_class_means_blended_with_momentum(tmp_path, digits):
    trainer = Trainer(mb.TrainConfig(method="pmr", epochs=2, pmr_momentum=0.25), tmp_path, dataset=digits, progress=False)
    method = trainer.method
    method.start_epoch(1)
    first = method.prototypes
    # the class means of the sampled features, computed by hand from the same sample
    inputs, labels = trainer.splits["train"]
    batches = max(1, (len(labels) // trainer.config.batch_size) // 10)
    generator = torch.Generator().manual_seed(0 * 100_003 + 0)
    idx = torch.randperm(len(labels), generator=generator)[:batches * trainer.config.batch_size]
    trainer.model.eval()
    with torch.no_grad():
        x = {m: trainer._with_training_noise(m, trainer._input(m, inputs[m][idx]), generator) for m in digits.modalities}
        features = trainer.model(x).features
    for m in digits.modalities:
        for k in range(digits.num_classes):
            members = features[m][labels[idx] == k]
            assert len(members) > 0 and torch.allclose(first[m][k], members.mean(0), atol=1e-5)
    metrics = EpochMetrics(2, {}, {}, "acc")
    fresh = method._class_means(2, previous=first)
    method.end_epoch(metrics)
    for m in digits.modalities:  # from the second epoch on: 0.75 · fresh + 0.25 · previous
        assert torch.allclose(method.prototypes[m], 0.75 * fresh[m] + 0.25 * first[m], atol=1e-6)
    assert set(metrics.row) == {"pmr_ratio", "pmr_boost_image", "pmr_boost_audio"}


def test_pmr_entropy_term_raises_the_leading_modalitys_entropy_in_the_first_epochs(tmp_path, digits):
    """The paper's PER (Eq. 13), off by default as in the official code: with μ > 0 the loss is the
    official one minus μ·λ·H_A − μ·β·H_B in epochs 1..E_r, and the official one after."""
    from milesbook.methods.pmr import prototype_entropy
    uniform = torch.zeros(3, 4)
    assert prototype_entropy(uniform).item() == pytest.approx(math.log(4))
    assert prototype_entropy(torch.tensor([[0.0, -50.0]])).item() == pytest.approx(0.0, abs=1e-6)

    def loss_at(epoch, **knobs):
        config = mb.TrainConfig(method="pmr", epochs=3, pmr_alpha=2.0, pmr_entropy_epochs=2, **knobs)
        trainer = Trainer(config, tmp_path / str(knobs), dataset=digits, progress=False)
        trainer.method.start_epoch(epoch)
        inputs, labels = trainer.splits["train"]
        batch = {m: trainer._input(m, inputs[m][:64]) for m in digits.modalities}
        out = trainer.model(batch)
        return trainer.method.loss(out, labels[:64], trainer.task.loss).item(), out, labels[:64], trainer.method
    official, out, y, method = loss_at(1)
    per, *_ = loss_at(1, pmr_entropy=0.01)
    sims = {m: prototype_logits(out.features[m], method.prototypes[m]) for m in digits.modalities}
    beta, lam, _ = pmr_coefficients(sims["image"], sims["audio"], y, 2.0)
    expected = official - 0.01 * (lam * prototype_entropy(sims["image"]) + beta * prototype_entropy(sims["audio"])).item()
    assert (beta + lam).item() == 2.0 and per == pytest.approx(expected, rel=1e-6) and per != official
    assert loss_at(3, pmr_entropy=0.01)[0] == pytest.approx(loss_at(3)[0], rel=1e-7)  # after E_r: the official loss


# ---- MLA -----------------------------------------------------------------------------------------

from milesbook.methods.mla import entropy_weights, project_head_gradient  # noqa: E402


def test_mla_entropy_weights_favour_the_confident_modality():
    unsure, sure = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 0.0]])
    p = torch.softmax(sure[0], 0)
    e_sure, e_unsure = float(-(p * p.log()).sum()), math.log(2)
    weights = entropy_weights({"a": unsure, "b": sure})
    # w_m = exp(max e − e_m) / Σ_j exp(max e − e_j)
    expected_b = math.exp(e_unsure - e_sure) / (1 + math.exp(e_unsure - e_sure))
    assert weights["b"].item() == pytest.approx(expected_b) and weights["a"].item() == pytest.approx(1 - expected_b)
    assert weights["b"].shape == (1, 1)
    # the official rule: softmax over the batch axis, one entropy per modality for the whole batch
    batch = {"a": torch.tensor([[0.0, 1.0], [0.0, 1.0]]), "b": torch.tensor([[2.0, 0.0], [0.0, 0.0]])}
    q = torch.softmax(torch.tensor([2.0, 0.0]), 0)
    e_a, e_b = 2 * math.log(2), float(-(q * q.log()).sum()) + math.log(2)  # class 0 column, class 1 column
    weights = entropy_weights(batch, per_sample=False)
    assert weights["a"].shape == () and weights["a"].item() == pytest.approx(1 / (1 + math.exp(e_a - e_b)))


def test_mla_projection_damps_the_direction_the_head_has_seen():
    grad = torch.tensor([[1.0, 1.0]])
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # r = (1, 0)
    projected, projector = project_head_gradient(grad, torch.eye(2), features, alpha=0.1)
    # k = P rᵀ = (1, 0)ᵀ, r k = 1: P = I − diag(1, 0) / 1.1 = diag(1/11, 1), then divided by its norm
    raw = torch.tensor([[1 / 11, 0.0], [0.0, 1.0]])
    expected = raw / raw.norm()
    assert torch.allclose(projector, expected) and torch.allclose(projected, grad @ expected.t())
    assert projected[0, 0] < 0.1 * projected[0, 1]  # the seen direction r is nearly removed


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_mla_alternates_the_encoders_and_projects_the_shared_head(tmp_path, digits, fusion):
    trainer = Trainer(mb.TrainConfig(method="mla", fusion=fusion, epochs=1), tmp_path, dataset=digits, progress=False)
    method, model = trainer.method, trainer.model
    first, last = model.modalities  # image, then audio
    method.start_epoch(1)
    inputs, labels = trainer.splits["train"]
    batch = {m: trainer._input(m, inputs[m][:64]) for m in model.modalities}
    before = {k: v.detach().clone() for k, v in model.named_parameters()}  # weights, not BN statistics
    out = trainer._forward(batch)
    loss = method.loss(out, labels[:64], trainer.task.loss)
    after = dict(model.named_parameters())
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith(f"encoders.{first}.") for k in moved) and "fusion_head.weight" in moved
    assert not any(k.startswith(f"encoders.{last}.") or k.startswith("heads.") for k in moved)
    assert method.substeps == 1 and torch.equal(method.projector, torch.eye(model.feature_dim))  # first: as is
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    d = model.feature_dim
    raw = model.fusion_head.weight.grad[:, :d].clone()
    method.after_backward(out, labels[:64], 1)
    expected, _ = project_head_gradient(raw, torch.eye(d), out.features[last], alpha=0.1)  # batch 0: α = 0.1
    assert torch.allclose(model.fusion_head.weight.grad[:, :d], expected, atol=1e-6)
    if fusion == "concat":  # the concatenation head's second half is not part of the shared head
        assert not model.fusion_head.weight.grad[:, d:].any()


def test_mla_predicts_with_the_entropy_weighted_shared_head(tmp_path, digits):
    trainer = Trainer(mb.TrainConfig(method="mla", epochs=1), tmp_path, dataset=digits, progress=False)
    inputs, _ = trainer.splits["val"]
    with torch.no_grad():
        out = trainer.method.readout(trainer.model({m: trainer._input(m, inputs[m][:16]) for m in digits.modalities}))
    head = trainer.model.fusion_head
    for m in digits.modalities:
        assert torch.allclose(out.heads[m], out.features[m] @ head.weight[:, :64].t() + head.bias, atol=1e-6)
    weights = entropy_weights(out.heads)
    assert torch.allclose(out.fusion, sum(weights[m] * out.heads[m] for m in digits.modalities), atol=1e-6)
    assert torch.allclose(out.fusion, sum(out.parts.values()), atol=1e-6)


# ---- InfoReg -------------------------------------------------------------------------------------

from milesbook.methods.inforeg import regulation_strengths, window_opening  # noqa: E402


def test_inforeg_window_compares_ten_epoch_means_of_the_trace():
    assert window_opening([]) == 1.0 and window_opening([2.0]) == 1.0  # padded with ten zeros
    assert window_opening([1.0, 2.0, 3.0]) == pytest.approx(3 / 6)     # (T_3 − T_{−7}) / (T_1 + T_2 + T_3)
    assert window_opening([1.0] * 11) == pytest.approx(0.0)            # a flat trace closes the window
    assert window_opening([4.0] * 10 + [2.0]) == pytest.approx((2 - 4) / 38)  # falling: k < 0


def test_inforeg_regulates_only_the_modality_ahead_with_an_open_window():
    ahead, behind = torch.tensor(5.0), torch.tensor(3.0)
    a, b = regulation_strengths(ahead, behind, True, True, 0.95, 0.1)
    assert a.item() == pytest.approx(0.95 * math.exp(math.tanh(2.0))) and b.item() == 0.0
    a, b = regulation_strengths(behind, ahead, True, True, 0.95, 0.1)
    assert a.item() == 0.0 and b.item() == pytest.approx(0.1 * math.exp(math.tanh(2.0)))
    a, b = regulation_strengths(ahead, behind, False, True, 0.95, 0.1)  # A's window is closed
    assert (a.item(), b.item()) == (0.0, 0.0)
    assert [s.item() for s in regulation_strengths(ahead, ahead, True, True, 0.95, 0.1)] == [0.0, 0.0]


def test_inforeg_pulls_the_encoder_ahead_to_its_epoch_start_weights(tmp_path, digits):
    config = mb.TrainConfig(method="inforeg", epochs=1, inforeg_beta_a=0.7, inforeg_beta_b=0.3)
    trainer = Trainer(config, tmp_path, dataset=digits, progress=False)
    method, model = trainer.method, trainer.model
    method.start_epoch(1)
    with torch.no_grad():  # move the encoders away from the anchor, so the pull is not zero
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    inputs, labels = trainer.splits["train"]
    batch, y = {m: trainer._input(m, inputs[m][:64]) for m in model.modalities}, labels[:64]
    out = trainer._forward(batch)
    loss = method.loss(out, y, trainer.task.loss)
    expected_loss = F.cross_entropy(out.fusion, y) + sum(F.cross_entropy(out.parts[m], y) for m in model.modalities)
    assert loss.item() == pytest.approx(expected_loss.item())
    scores = {m: torch.softmax(out.parts[m], 1)[torch.arange(64), y].sum() for m in model.modalities}
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    raw = {m: [p.grad.clone() for p in method.params[m]] for m in model.modalities}
    method.after_backward(out, y, 1)
    (a, b), gap = model.modalities, torch.tanh(scores["image"] - scores["audio"]).item()
    beta = {a: 0.7 * math.exp(gap) if gap > 0 else 0.0, b: 0.3 * math.exp(-gap) if gap < 0 else 0.0}
    assert sum(v > 0 for v in beta.values()) == 1  # one modality is ahead in this batch
    for m in model.modalities:
        for p, g, p0 in zip(method.params[m], raw[m], method.anchor[m]):
            assert torch.allclose(p.grad, g + beta[m] * (p.detach() - p0), atol=1e-6)
    # the Fisher trace of the epoch: Σ over conv/linear weights of mean(grad²)
    traces = {m: sum((w.grad ** 2).mean().item() for w in method.fisher_weights[m]) for m in model.modalities}
    row = {}
    method.end_epoch(EpochMetrics(1, {}, row, "acc"))
    for m in model.modalities:
        assert row[f"inforeg_trace_{m}"] == pytest.approx(traces[m], rel=1e-5)
        assert row[f"inforeg_regulated_{m}"] == (1.0 if beta[m] > 0 else 0.0)
        assert row[f"inforeg_k_{m}"] == 1.0


def test_inforeg_window_choice_reads_each_or_the_first_trace(tmp_path, digits):
    for window, expected in (("each", {"image": 3 / 6, "audio": 1.0}), ("first", {"image": 3 / 6, "audio": 3 / 6})):
        trainer = Trainer(mb.TrainConfig(method="inforeg", epochs=1, inforeg_window=window), tmp_path / window,
                          dataset=digits, progress=False)
        trainer.method.traces = {"image": [1.0, 2.0, 3.0], "audio": [0.0, 0.0, 5.0]}
        trainer.method.start_epoch(4)
        assert trainer.method.opening == pytest.approx(expected)
