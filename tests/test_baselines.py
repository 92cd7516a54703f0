"""The seven baselines: each defining computation on hand-computed numbers, then every method end to
end on the embedded dataset with both fusions, including resume after an interruption."""
import json
import math

import pytest
import torch

import milesbook as mb
from milesbook.methods.gblend import gblend_weights
from milesbook.methods.mslr import mslr_dynamic_factor, mslr_smoothed_rates
from milesbook.methods.ogm import ogm_coefficients
from milesbook.errors import UserError
from milesbook.methods import EpochMetrics
from milesbook.train import Trainer

from .conftest import killed_and_resumed, run_cli, without_seconds


def _logits_with_true_class_prob(probs):
    """Two-class logits whose softmax gives probability p to class 0 (the label)."""
    return torch.log(torch.tensor([[p, 1 - p] for p in probs]))


# ---- OGM ----------------------------------------------------------------------------------------

def test_ogm_coefficients_both_branches():
    labels = torch.zeros(2, dtype=torch.long)
    strong = _logits_with_true_class_prob([0.9, 0.7])   # s = 1.6
    weak = _logits_with_true_class_prob([0.5, 0.3])     # s = 0.8
    k_a, k_b = ogm_coefficients(strong, weak, labels, alpha=0.5)  # ρ = 2 > 1 → damp A
    assert k_a.item() == pytest.approx(1 - math.tanh(0.5 * 2.0), rel=1e-5) and k_b.item() == 1.0
    k_a, k_b = ogm_coefficients(weak, strong, labels, alpha=0.5)  # ρ = 0.5 → damp B with α/ρ
    assert k_a.item() == 1.0 and k_b.item() == pytest.approx(1 - math.tanh(0.5 / 0.5), rel=1e-5)
    k_a, k_b = ogm_coefficients(weak, weak, labels, alpha=0.8)    # ρ = 1 exactly → the else branch
    assert k_a.item() == 1.0 and k_b.item() == pytest.approx(1 - math.tanh(0.8), rel=1e-5)


def _trainer_with_grads(toy, method, **options):
    trainer = Trainer(mb.TrainConfig(dataset="toy", method=method, **options), "/unused", toy, False)
    x = {m: toy.splits["train"].inputs[m][:64] for m in toy.modalities}
    y = toy.splits["train"].labels[:64]
    out = trainer._forward(x)
    trainer.optimizer.zero_grad()
    trainer.method.loss(out, y, torch.nn.functional.cross_entropy).backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return trainer, out, y, grads


def test_ogm_scales_encoder_gradients_inside_the_window_only(toy):
    trainer, out, y, before = _trainer_with_grads(toy, "ogm", ogm_start=2, ogm_end=3, ogm_alpha=0.3)
    k_a, k_b = ogm_coefficients(out.parts["a"].detach(), out.parts["b"].detach(), y, 0.3)
    trainer.method.after_backward(out, y, epoch=1)  # before the window: untouched
    for name, p in trainer.model.named_parameters():
        if name in before:
            assert torch.equal(p.grad, before[name]), name
    trainer.method.after_backward(out, y, epoch=2)
    for name, p in trainer.model.named_parameters():
        if name not in before:
            continue
        if name.startswith("encoders.a.") and p.dim() >= 2:
            assert torch.allclose(p.grad, before[name] * k_a), name
        elif name.startswith("encoders.b.") and p.dim() >= 2:
            assert torch.allclose(p.grad, before[name] * k_b), name
        else:  # biases, fusion head, heads: never modulated
            assert torch.equal(p.grad, before[name]), name
    assert min(k_a.item(), k_b.item()) < 1  # something was modulated
    trainer.method.after_backward(out, y, epoch=4)  # after the window: untouched again


def test_ogm_ge_noise_scale_and_scope(toy):
    torch.manual_seed(0)
    trainer, out, y, before = _trainer_with_grads(toy, "ogm-ge", ogm_alpha=0.3)
    k = dict(zip("ab", ogm_coefficients(out.parts["a"].detach(), out.parts["b"].detach(), y, 0.3)))
    trainer.method.after_backward(out, y, epoch=1)
    checked = 0
    for name, p in trainer.model.named_parameters():
        if name not in before:
            continue
        modality = name.split(".")[1] if name.startswith("encoders.") else None
        if modality and p.dim() >= 2:
            noise = p.grad - before[name] * k[modality]
            assert noise.std().item() == pytest.approx(before[name].std().item(), rel=0.15), name
            assert abs(noise.mean().item()) < 0.2 * before[name].std().item()
            checked += 1
        else:
            assert torch.equal(p.grad, before[name]), f"{name} must not be touched"
    assert checked == 6  # three weight matrices per MLP encoder


# ---- G-Blend ------------------------------------------------------------------------------------

def test_gblend_weights_hand_computed():
    before = {"fusion": (1.0, 1.2), "a": (1.0, 1.1), "b": (2.0, 2.0)}
    after = {"fusion": (0.5, 0.9), "a": (0.9, 1.0), "b": (1.8, 2.1)}
    # fusion: ΔG = 0.3, ΔO = (0.9-0.5)-(1.2-1.0) = 0.2 → 0.3/0.04 = 7.5
    # a: ΔG = 0.1, ΔO = (1.0-0.9)-(1.1-1.0) = 0 → floored at 1e-3 → 0.1/1e-6 = 1e5
    # b: ΔG = -0.1, ΔO = (2.1-1.8)-(2.0-2.0) = 0.3 → |−0.1/0.09| = 1.111 (the references take |·|)
    # normalised, fusion would get 7.5e-5 (the review's case): it is raised to 0.1, the others share 0.9
    w = gblend_weights(before, after)
    b_raw = 0.1 / 0.09
    assert w["fusion"] == pytest.approx(0.1)
    assert w["a"] == pytest.approx(0.9 * 1e5 / (1e5 + b_raw)) and w["b"] == pytest.approx(0.9 * b_raw / (1e5 + b_raw))
    assert sum(w.values()) == pytest.approx(1.0)
    w = gblend_weights({"fusion": (1.0, 1.2), "a": (1.0, 1.5)}, {"fusion": (0.5, 0.9), "a": (0.8, 1.4)})
    # fusion 0.3/0.2² = 7.5; a: ΔG 0.1, ΔO (1.4-0.8)-(1.5-1.0) = 0.1 → 0.1/0.01 = 10; fusion above the floor
    assert w == {"fusion": pytest.approx(7.5 / 17.5), "a": pytest.approx(10 / 17.5)}
    assert gblend_weights(before, after, min_fusion=0.0)["fusion"] == pytest.approx(7.5 / (7.5 + 1e5 + b_raw))


def test_gblend_weights_uniform_when_no_head_moved():
    w = gblend_weights({"fusion": (1, 1), "a": (1, 1)}, {"fusion": (0.5, 1), "a": (0.4, 1)})
    assert w == {"fusion": 0.5, "a": 0.5}


def test_gblend_has_one_super_epoch_for_estimation_and_period():
    """Both references estimate over one super-epoch and re-estimate every super-epoch: one knob, so a
    search cannot draw the two apart (the tuned row once ran 10 estimation epochs every 12)."""
    from milesbook.methods import hyperparameters_of
    from milesbook.search import search_space
    names = [k.name for k in hyperparameters_of("gblend")]
    assert "gblend_every" in names and not any("epochs" in n for n in names)
    assert "gblend_every" in search_space("gblend", ("image", "audio"))


def test_gblend_estimates_on_the_training_input_distribution(toy):
    """The train/held-out losses G-Blend compares are measured with the noise training adds."""
    import dataclasses
    noisy = dataclasses.replace(toy, train_noise_std={"a": 1.0, "b": 1.0})
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="gblend", gblend_every=1), "/unused", noisy, False)
    calls = []
    evaluate = trainer.evaluate

    def recording(split, **kwargs):
        calls.append((split, kwargs.get("training_noise")))
        return evaluate(split, **kwargs)
    trainer.evaluate = recording
    trainer.method.start_epoch(1)
    assert len(calls) == 2 * 2 * 3  # (train, held-out) × (before, after) × 3 heads
    assert all(noise is not None for _, noise in calls)
    clean = evaluate("train")["loss_fusion"]
    seeded = [evaluate("train", training_noise=torch.Generator().manual_seed(7))["loss_fusion"] for _ in range(2)]
    assert seeded[0] == seeded[1] and seeded[0] != clean


def test_gblend_holds_out_and_counts_estimation_epochs(tmp_path, toy):
    config = mb.TrainConfig(dataset="toy", method="gblend", epochs=3, gblend_mode="online", gblend_every=2,
                            gblend_holdout=0.2)
    trainer = Trainer(config, tmp_path, toy, False)
    assert len(trainer.splits["train"][1]) == 240 and len(trainer.splits["gblend_holdout"][1]) == 60
    trainer.fit()
    rows = mb.read_history(tmp_path)
    assert [r["gblend_extra_epochs"] for r in rows] == [6, 6, 12]  # before epochs 1 and 3: 3 heads × 2 epochs
    assert [r["gblend_estimations"] for r in rows] == [1, 1, 2]
    for r in rows:
        assert r["gblend_w_fusion"] + r["gblend_w_a"] + r["gblend_w_b"] == pytest.approx(1.0)


def test_gblend_counts_the_estimations_its_floor_decides(toy):
    """A fusion head whose held-out loss barely moves gets a raw weight far below the floor: the floor
    sets it, and the run counts that estimation; a balanced estimation is not counted."""
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="gblend", gblend_every=1), "/unused", toy, False)
    method = trainer.method
    stalled = {"fusion": [(1.0, 1.0), (0.9, 0.999)], "a": [(1.0, 1.0), (0.9, 0.8)], "b": [(1.0, 1.0), (0.9, 0.8)]}
    calls = iter([pair for head in ("fusion", "a", "b") for pair in stalled[head]])
    method._losses = lambda head, epoch: next(calls)
    method.start_epoch(1)
    assert method.weights["fusion"] == pytest.approx(0.1) and (method.estimations, method.floor_bound) == (1, 1)
    even = iter([(1.0, 1.0), (0.9, 0.8)] * 3)
    method._losses = lambda head, epoch: next(even)
    method.start_epoch(2)
    assert method.weights["fusion"] == pytest.approx(1 / 3) and (method.estimations, method.floor_bound) == (2, 1)
    assert method.summary() == {"gblend_estimations": 2, "gblend_floor_bound": 1}


# ---- MSLR ---------------------------------------------------------------------------------------

def test_mslr_smoothed_rates():
    rates = {"a": 1e-3, "b": 3e-3}
    assert mslr_smoothed_rates(rates, 0.5) == {"a": pytest.approx(1.5e-3), "b": pytest.approx(2.5e-3)}
    assert mslr_smoothed_rates(rates, 1.0) == rates
    assert mslr_smoothed_rates(rates, 0.0) == {"a": pytest.approx(2e-3), "b": pytest.approx(2e-3)}


def test_mslr_dynamic_factor_window():
    assert mslr_dynamic_factor([0.5, 0.6, 0.7, 0.8], 5) == 1.0
    assert mslr_dynamic_factor([0.1, 0.5, 0.6, 0.7, 0.8, 0.9], 5) == pytest.approx(0.9 / 0.7)
    assert mslr_dynamic_factor([0, 0, 0], 3) == 1.0


def test_mslr_rates_in_training(tmp_path, toy):
    mb.train(mb.TrainConfig(dataset="toy", method="mslr-s", epochs=1, mslr_lrs={"a": 1e-3, "b": 3e-3},
                            mslr_lambda=0.25), tmp_path / "s", dataset=toy, progress=False)
    row = mb.read_history(tmp_path / "s")[0]
    assert row["lr_a"] == pytest.approx(0.25e-3 + 0.75 * 2e-3) and row["lr_fusion"] == 1e-3
    mb.train(mb.TrainConfig(dataset="toy", method="mslr-d", epochs=5, mslr_lrs={"a": 1e-3, "b": 2e-3},
                            mslr_window=2), tmp_path / "d", dataset=toy, progress=False)
    rows = mb.read_history(tmp_path / "d")
    for m, start in (("a", 1e-3), ("b", 2e-3)):
        accs, lr, expected = [r[f"val_acc_{m}"] for r in rows], start, []
        for epoch in range(1, 6):
            expected.append(lr)
            if epoch % 2 == 0:
                lr *= mslr_dynamic_factor(accs[:epoch], 2)
        assert [r[f"lr_{m}"] for r in rows] == pytest.approx(expected)
        assert rows[0][f"lr_{m}"] == rows[1][f"lr_{m}"] == start  # no change before the first window ends


def test_mslr_k_needs_rates(toy):
    with pytest.raises(UserError, match="--mslr-lrs a=0.001,b=0.001"):
        Trainer(mb.TrainConfig(dataset="toy", method="mslr-k"), "/unused", toy, False)
    with pytest.raises(UserError, match="a rate for each of"):
        Trainer(mb.TrainConfig(dataset="toy", method="mslr-k", mslr_lrs={"a": 1e-3}), "/unused", toy, False)


def test_mslr_published_variant_starts_from_the_unimodal_models(tmp_path, toy):
    """--mslr-init unimodal: encoders and heads are the unimodal runs' selected weights, and the concat
    fusion head is their additive late fusion, so at step 0 the fusion logits are the sum of the
    unimodal models' logits."""
    rates = {"a": 1e-3, "b": 3e-3}
    config = mb.TrainConfig(dataset="toy", method="mslr-k", epochs=3, mslr_lrs=rates, mslr_init="unimodal")
    trainer = Trainer(config, tmp_path / "run", toy, False)
    inputs = {m: toy.splits["val"].inputs[m][:16] for m in ("a", "b")}
    with torch.no_grad():
        fused = trainer.model(inputs).fusion
    expected = 0
    for m, lr in rates.items():
        folder = tmp_path / "run" / "init" / f"unimodal-{m}"
        saved = json.loads((folder / "config.json").read_text())
        assert (saved["method"], saved["lr"], saved["test_split"]) == (f"unimodal-{m}", lr, False)
        weights = mb.runs.selected_weights(folder)
        encoder = {k.removeprefix(f"encoders.{m}."): v for k, v in weights.items() if k.startswith(f"encoders.{m}.")}
        assert all(torch.equal(trainer.model.encoders[m].state_dict()[k], v) for k, v in encoder.items())
        assert torch.equal(trainer.model.heads[m].weight, weights["fusion_head.weight"])
        unimodal = mb.build_model({m: toy.shapes[m]}, toy.num_classes)
        unimodal.load_state_dict(weights)
        unimodal.eval()
        with torch.no_grad():
            expected = expected + unimodal({m: inputs[m]}).fusion
    assert torch.allclose(fused, expected, atol=1e-5)
    scratch = Trainer(mb.TrainConfig(**{**config.to_dict(), "mslr_init": "scratch"}), tmp_path / "s", toy, False)
    first = next(iter(trainer.model.encoders["a"].state_dict()))
    assert not torch.equal(scratch.model.encoders["a"].state_dict()[first], trainer.model.encoders["a"].state_dict()[first])
    summary = mb.train(config, tmp_path / "run", dataset=toy, progress=False)  # the init runs are reused
    assert summary["epochs"] == 3 and (tmp_path / "run" / "selected.pt").exists()


# ---- MSES ---------------------------------------------------------------------------------------

def test_mses_stops_exactly_the_stalled_modality(toy):
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="mses", mses_patience=2), "/unused", toy, False)
    method = trainer.method
    a_acc = [0.5, 0.6, 0.6, 0.55, 0.9]  # stalls after epoch 2 → stopped at epoch 4 (patience 2)
    b_acc = [0.2, 0.3, 0.4, 0.5, 0.6]   # keeps improving
    for epoch, (a, b) in enumerate(zip(a_acc, b_acc), start=1):
        row = {}
        method.end_epoch(EpochMetrics(epoch, {}, row, "acc", {"fusion": 0.5 + 0.1 * epoch, "a": a, "b": b}))
        assert row["mses_stopped_a"] == (4 if epoch >= 4 else 0) and row["mses_stopped_b"] == 0
        lr_a = method.group("a")["lr"]
        assert lr_a == (0.0 if epoch >= 4 else 1e-3)  # and stays 0 even when a's metric later rises
        assert method.group("b")["lr"] == 1e-3
    assert not method.should_stop()
    bn = [m for m in trainer.model.encoders["a"].modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(m.momentum == 0.0 for m in bn)


def test_mses_end_to_end_rate_stays_zero(tmp_path, toy):
    mb.train(mb.TrainConfig(dataset="toy", method="mses", epochs=12, mses_patience=1, lr=3e-3), tmp_path,
             dataset=toy, progress=False)
    rows = mb.read_history(tmp_path)
    for m in ("a", "b"):
        stopped = [r[f"mses_stopped_{m}"] for r in rows if r[f"mses_stopped_{m}"]]
        if stopped:
            after = [r[f"lr_{m}"] for r in rows if r["epoch"] > stopped[0]]
            assert all(lr == 0.0 for lr in after) and len(set(stopped)) == 1
    if len(rows) < 12:  # stopped early: every modality and the fusion head had converged
        assert all(rows[-1][f"mses_stopped_{m}"] for m in ("a", "b"))


def test_mses_scores_val_and_test_on_the_same_weights(tmp_path, toy):
    """At a stopping epoch MSES puts the stopped modality's best weights back; that epoch's validation
    and test must still score one and the same model (the review found test scored after the restore)."""
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="mses", epochs=12, mses_patience=1, lr=3e-3),
                      tmp_path, toy, False)
    scored = []  # (split, a fingerprint of every weight) at each evaluation
    evaluate = trainer.evaluate

    def recording(split):
        scored.append((split, sum(p.double().sum().item() for p in trainer.model.parameters())))
        return evaluate(split)
    trainer.evaluate = recording
    trainer.fit()
    rows = mb.read_history(tmp_path)
    assert any(rows[-1][f"mses_stopped_{m}"] for m in ("a", "b"))  # a restore happened
    assert [split for split, _ in scored] == ["val", "test"] * len(rows)
    for (_, val_weights), (_, test_weights) in zip(scored[::2], scored[1::2]):
        assert test_weights == val_weights


# ---- every method, end to end ---------------------------------------------------------------------

ALL = ["vanilla", "miles-lab", "aux", "miles", "mses", "mslr-k", "mslr-s", "mslr-d", "ogm", "ogm-ge", "gblend",
       "mmpareto", "pmr", "mla", "inforeg", "aim-r", "arl", "remix", "dgl", "aug"]


@pytest.fixture(scope="module")
def few_digits():
    """digits-av cut to 160/90/90 samples (the golden runs' data): 44 runs of every method, in seconds."""
    from .test_golden import small_digits
    return small_digits()


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("method", ALL)
def test_every_method_runs_and_resumes(tmp_path, few_digits, method, fusion):
    # Each method's rule acts within two epochs: ARL's scaling, Remix's subsets and AUG's checks from epoch 2.
    config = mb.TrainConfig(method=method, fusion=fusion, epochs=2, gblend_every=1,
                            mslr_lrs={"image": 1e-3, "audio": 2e-3}, mslr_window=2, mses_patience=1,
                            arl_warmup=1, remix_warmup=1, aug_every=1)
    whole = mb.train(config, tmp_path / "whole", dataset=few_digits, progress=False)
    assert 0 < whole["test_acc_fusion"] <= 1 and 0 <= whole["test_acc_audio"] <= 1

    resumed = killed_and_resumed(config, tmp_path / "cut", few_digits)
    assert without_seconds(resumed) == without_seconds(mb.read_history(tmp_path / "whole"))


@pytest.mark.parametrize("args,message", [
    (["--method", "ogm", "--ogm-alpha", "0"], "--ogm-alpha must be > 0"),
    (["--method", "ogm", "--ogm-start", "5", "--ogm-end", "2"], "1 ≤ start ≤ end"),
    (["--method", "ogm", "--ogm-params", "all"], "unknown --ogm-params value 'all'; choose one of: weights, conv"),
    (["--method", "gblend", "--gblend-holdout", "0.7"], "--gblend-holdout must be in (0, 0.5)"),
    (["--method", "gblend", "--gblend-mode", "sometimes"], "unknown --gblend-mode value 'sometimes'"),
    (["--method", "mslr-s", "--mslr-lambda", "2"], "--mslr-lambda must be in [0, 1]"),
    (["--method", "mslr-k", "--mslr-lrs", "image=fast"], "--mslr-lrs expects MODALITY=RATE pairs"),
    (["--method", "mslr-k", "--mslr-lrs", "image=-1,audio=1"], "--mslr-lrs must be > 0"),
    (["--method", "mslr-d", "--mslr-window", "1"], "--mslr-window must be ≥ 2"),
    (["--method", "mses", "--mses-patience", "0"], "--mses-patience must be ≥ 1"),
    (["--method", "ogm-gee"], "unknown method 'ogm-gee'; choose one of: vanilla, aux, miles, miles-lab, mses, mslr-k"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; choose one of: adam, sgd"),
])
def test_baseline_flag_errors(tmp_path, args, message):
    result = run_cli("train", "--epochs", "1", "--out", tmp_path / "r", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_mses_reports_its_restored_best_weights_after_a_stop(tmp_path, toy):
    """After a modality stops, its encoder and head are its best epoch's (restored, frozen): every
    later epoch reads exactly that epoch's validation and test values, and so does the summary."""
    import csv
    summary = mb.train(mb.TrainConfig(dataset="toy", method="mses", epochs=14, mses_patience=2, seed=0), tmp_path,
                       dataset=toy, progress=False)
    history = mb.read_history(tmp_path)
    with open(tmp_path / "test_history.csv") as f:
        test = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    checked = 0
    for m in ("a", "b"):
        stop = int(history[-1][f"mses_stopped_{m}"])
        if not stop or stop == len(history):
            continue
        val = [row[f"val_acc_{m}"] for row in history]
        best = val.index(max(val[:stop]))  # the first epoch at the best value before the stop
        checked += val[stop - 1] < val[best]  # the last weights before the stop were worse: restoring matters
        for epoch in range(stop, len(history)):  # epochs after the stop (0-based index)
            assert val[epoch] == val[best] and test[epoch][f"test_acc_{m}"] == test[best][f"test_acc_{m}"]
        if summary["best_epoch"] > stop:
            assert summary[f"test_acc_{m}"] == test[best][f"test_acc_{m}"]
    assert checked >= 1, "no modality stopped with last weights worse than its best: nothing to check"


def test_weight_decay_reaches_the_optimizer_and_keys_only_runs_that_use_it(toy):
    """--weight-decay (OGM-GE's and PMR's official SGD use 1e-4) goes into every param group; a run made
    before the setting existed keeps its cache key, and a nonzero decay gets a key of its own."""
    from milesbook.config import relevant_config
    decayed = mb.TrainConfig(dataset="toy", method="ogm", optimizer="sgd", weight_decay=1e-4, epochs=1)
    trainer = Trainer(decayed, "/unused", toy, False)
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {1e-4}
    plain = mb.TrainConfig(dataset="toy", method="ogm", optimizer="sgd", epochs=1)
    older = {k: v for k, v in plain.to_dict().items() if k != "weight_decay"}  # config.json of an earlier run
    assert relevant_config(older) == relevant_config(plain.to_dict()) != relevant_config(decayed.to_dict())
    with pytest.raises(UserError, match="--weight-decay must be in"):
        mb.TrainConfig(weight_decay=-0.1).check()
    done = run_cli("train", "--dataset", "toy", "--weight-decay", "2", "--epochs", "1", "--out", "/tmp/never-made")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "milesbook: error: --weight-decay must be in [0, 1), got 2.0"]
