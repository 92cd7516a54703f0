"""The one trainer: run-folder contract, methods' losses and readings, MILES inside the loop,
determinism, resume after a kill, model selection, and training errors."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import milesbook as mb
from milesbook.errors import NonFiniteLossError, UserError
from milesbook.miles import decide
from milesbook.runs import select_best_epoch
from milesbook.train import Trainer

from .conftest import run_cli


def _strip_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("method", ["vanilla", "aux", "miles"])
def test_run_folder_contract(tmp_path, digits, method):
    config = mb.TrainConfig(method=method, epochs=2)
    summary = mb.train(config, tmp_path, dataset=digits, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["method"] == method
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    required = ["epoch", "lr_fusion", "lr_image", "lr_audio", "train_loss", "val_acc_fusion", "val_acc_image",
                "val_acc_audio", "u_image", "u_audio", "delta"]
    assert all(c in rows[0] for c in required)
    for row in rows:
        assert 0 <= float(row["val_acc_audio"]) <= 1 and math.isfinite(float(row["delta"]))
    for key in ("best_epoch", "test_acc_fusion", "test_acc_image", "test_acc_audio"):
        assert key in summary
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert 1 <= summary["best_epoch"] <= 2 and 0 < summary["test_acc_fusion"] <= 1


def test_each_method_reads_its_own_modality_logits(tmp_path, toy):
    vanilla = mb.train(mb.TrainConfig(dataset="toy", method="vanilla", epochs=2), tmp_path / "v", dataset=toy, progress=False)
    aux = mb.train(mb.TrainConfig(dataset="toy", method="aux", epochs=2), tmp_path / "x", dataset=toy, progress=False)
    for row in mb.read_history(tmp_path / "v"):
        assert row["val_acc_a"] == row["val_acc_part_a"]  # vanilla: the fusion head's part
        u_a, u_b = mb.conditional_utilization(row["val_acc_fusion"], row["val_acc_part_a"], row["val_acc_part_b"])
        assert row["u_a"] == pytest.approx(u_a) and row["u_b"] == pytest.approx(u_b)
    for row in mb.read_history(tmp_path / "x"):
        assert row["val_acc_a"] == row["val_acc_head_a"]  # aux/miles: the trained unimodal head
    assert vanilla["test_acc_a"] == vanilla["test_acc_part_a"] and aux["test_acc_a"] == aux["test_acc_head_a"]


def test_vanilla_encoders_get_no_gradient_from_heads(toy):
    """L_AB only: the unimodal heads are detached probes, so the encoders' gradients come from the
    fusion loss alone — equal to those of a run with the heads' losses removed."""
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="vanilla", epochs=1), "/unused", toy, False)
    x = {m: toy.splits["train"].inputs[m][:32] for m in toy.modalities}
    y = toy.splits["train"].labels[:32]
    out = trainer._forward(x)
    loss = trainer.method.loss(out, y, torch.nn.functional.cross_entropy)
    probes = sum(torch.nn.functional.cross_entropy(h, y) for h in out.heads.values())
    encoder = trainer.model.encoders["a"].net[0].weight
    with_probes = torch.autograd.grad(loss + probes, encoder, retain_graph=True)[0]
    fusion_only = torch.autograd.grad(loss, encoder)[0]
    assert torch.allclose(with_probes, fusion_only)


def test_miles_rates_follow_algorithm_1_from_logged_utilization(tmp_path, digits):
    config = mb.TrainConfig(method="miles", epochs=4, lr=2e-3, tau=0.05, mu=0.25)
    mb.train(config, tmp_path, dataset=digits, progress=False)
    rows = mb.read_history(tmp_path)
    assert rows[0]["lr_image"] == rows[0]["lr_audio"] == rows[0]["lr_fusion"] == 2e-3
    slowed = 0
    for previous, row in zip(rows, rows[1:]):
        factor_image, factor_audio = decide(previous["u_image"], previous["u_audio"], 0.05, 0.25)
        assert row["lr_image"] == pytest.approx(2e-3 * factor_image)
        assert row["lr_audio"] == pytest.approx(2e-3 * factor_audio)
        assert row["lr_fusion"] == 2e-3
        slowed += factor_image < 1 or factor_audio < 1
    assert slowed >= 1  # images dominate early on digits-av, so MILES must have acted


def test_miles_lab_trains_exactly_what_vanilla_trains(tmp_path, toy):
    """The scheduling-only cell: same losses as vanilla (L_AB, detached probes), so for the same batch
    and rates the encoders get the same gradients, and a first epoch (rates not yet changed) ends
    with the same weights."""
    trainers = {name: Trainer(mb.TrainConfig(dataset="toy", method=name, epochs=1, seed=5), tmp_path / name, toy, False)
                for name in ("vanilla", "miles-lab")}
    x = {m: toy.splits["train"].inputs[m][:32] for m in toy.modalities}
    y = toy.splits["train"].labels[:32]
    grads = {}
    for name, trainer in trainers.items():
        assert not trainer.method.trains_heads and trainer.method.modality_source == "parts"
        out = trainer._forward(x)
        loss = trainer.method.loss(out, y, torch.nn.functional.cross_entropy)
        probes = sum(torch.nn.functional.cross_entropy(h, y) for h in out.heads.values())
        encoders = [p for m in toy.modalities for p in trainer.model.encoders[m].parameters()]
        grads[name] = torch.autograd.grad(loss + probes, encoders)
    assert all(torch.equal(a, b) for a, b in zip(grads["vanilla"], grads["miles-lab"]))
    for trainer in trainers.values():
        trainer.fit()
    vanilla, lab = (trainers[n].model.state_dict() for n in ("vanilla", "miles-lab"))
    assert all(torch.equal(vanilla[k], lab[k]) for k in vanilla)


def test_miles_lab_rates_follow_algorithm_1_from_fusion_parts(tmp_path, digits):
    summary = mb.train(mb.TrainConfig(method="miles-lab", epochs=4, lr=2e-3, tau=0.05, mu=0.25), tmp_path,
                       dataset=digits, progress=False)
    assert summary["modality_reading"] == "part" and summary["heads"] == "probes" and summary["inference"] == "fusion head"
    rows = mb.read_history(tmp_path)
    slowed = 0
    for row in rows:
        assert row["val_acc_audio"] == row["val_acc_part_audio"]
        u_image, u_audio = mb.conditional_utilization(row["val_acc_fusion"], row["val_acc_part_image"],
                                                      row["val_acc_part_audio"])
        assert row["u_image"] == pytest.approx(u_image) and row["u_audio"] == pytest.approx(u_audio)
    for previous, row in zip(rows, rows[1:]):
        factor_image, factor_audio = decide(previous["u_image"], previous["u_audio"], 0.05, 0.25)
        assert (row["lr_image"], row["lr_audio"], row["lr_fusion"]) == \
            pytest.approx((2e-3 * factor_image, 2e-3 * factor_audio, 2e-3))
        slowed += factor_image < 1
    assert slowed >= 1  # vanilla's fusion barely uses audio on digits-av, so the image side is slowed


def test_aux_never_changes_rates_but_logs_utilization(tmp_path, toy):
    mb.train(mb.TrainConfig(dataset="toy", method="aux", epochs=3, lr=1e-3), tmp_path, dataset=toy, progress=False)
    rows = mb.read_history(tmp_path)
    assert {r["lr_a"] for r in rows} == {r["lr_b"] for r in rows} == {1e-3}
    assert all(math.isfinite(r["delta"]) for r in rows)


def test_utilization_from_train_split(tmp_path, toy):
    mb.train(mb.TrainConfig(dataset="toy", method="miles", epochs=2, utilization_split="train"), tmp_path, dataset=toy, progress=False)
    for row in mb.read_history(tmp_path):
        u_a, _ = mb.conditional_utilization(row["train_acc_fusion"], row["train_acc_a"], row["train_acc_b"])
        assert row["u_a"] == pytest.approx(u_a)


def test_unimodal_reference(tmp_path, digits):
    summary = mb.train(mb.TrainConfig(method="unimodal-audio", epochs=2), tmp_path, dataset=digits, progress=False)
    assert summary["modalities"] == ["audio"]
    assert summary["test_acc_audio"] == summary["test_acc_fusion"]
    row = mb.read_history(tmp_path)[0]
    assert "lr_image" not in row and math.isnan(row["delta"])


def test_same_seed_same_history_other_seed_differs(tmp_path, toy):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        mb.train(mb.TrainConfig(dataset="toy", method="miles", epochs=3, seed=seed), tmp_path / name, dataset=toy, progress=False)
    a, b, c = (_strip_seconds(mb.read_history(tmp_path / n)) for n in "abc")
    assert a == b
    assert a != c


def test_resume_after_interruption_matches_uninterrupted(tmp_path, digits):
    config = mb.TrainConfig(method="miles", epochs=4, tau=0.05)
    mb.train(config, tmp_path / "whole", dataset=digits, progress=False)

    class Killed(Exception):
        pass

    def die_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        mb.train(config, tmp_path / "split", dataset=digits, progress=False, on_epoch_end=die_after_two)
    assert len(mb.read_history(tmp_path / "split")) == 2
    with pytest.raises(UserError, match="--resume"):
        mb.train(config, tmp_path / "split", dataset=digits, progress=False)  # never overwrite a run silently
    summary = mb.train(config, tmp_path / "split", dataset=digits, progress=False, resume=True)
    assert _strip_seconds(mb.read_history(tmp_path / "split")) == _strip_seconds(mb.read_history(tmp_path / "whole"))
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if "seconds" not in k} == \
        {k: v for k, v in whole.items() if "seconds" not in k}


def test_cli_run_killed_with_sigkill_resumes_identically(tmp_path):
    """A real kill -9 in the middle of training, then `--resume`: nothing lost, same history."""
    args = ["train", "--dataset", "digits-av", "--method", "miles", "--epochs", "6", "--tau", "0.05"]
    whole = run_cli(*args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    env = {**os.environ}
    process = subprocess.Popen([sys.executable, "-m", "milesbook", *args, "--out", str(tmp_path / "killed")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(history.read_text().splitlines()) - 1
    assert 2 <= done < 6, f"the kill came too late to test anything ({done} epochs done)"
    resumed = run_cli(*args, "--out", tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _strip_seconds(mb.read_history(tmp_path / "killed")) == _strip_seconds(mb.read_history(tmp_path / "whole"))


def test_resume_with_other_flags_is_refused(tmp_path, toy):
    mb.train(mb.TrainConfig(dataset="toy", method="miles", epochs=1), tmp_path, dataset=toy, progress=False)
    with pytest.raises(UserError, match="cannot be resumed: its configuration differs \\(mu\\)"):
        mb.train(mb.TrainConfig(dataset="toy", method="miles", epochs=2, mu=0.3), tmp_path, dataset=toy, progress=False, resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, toy):
    import copy
    data = copy.deepcopy(toy)
    trainer = Trainer(mb.TrainConfig(dataset="toy", method="aux", epochs=4), tmp_path, data, False)

    def poison(row):
        if row["epoch"] == 2:
            trainer.splits["train"][0]["a"][0, 0] = float("nan")

    with pytest.raises(NonFiniteLossError, match="epoch 3.*Last good checkpoint: epoch 2"):
        trainer.fit(on_epoch_end=poison)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 2
    assert len(mb.read_history(tmp_path)) == 2


def test_select_best_epoch_rules():
    def rows(*pairs):
        return [{"epoch": i + 1, "val_acc_fusion": a, "val_loss_fusion": l} for i, (a, l) in enumerate(pairs)]
    saturated = rows((0.95, 0.5), (1.0, 0.30), (0.998, 0.10), (0.998, 0.05), (0.998, 0.05))
    assert select_best_epoch(saturated, 0.0) == 2          # strict: the single lucky 100 %
    assert select_best_epoch(saturated, 0.005) == 5        # tolerance: lowest loss, later on ties
    assert select_best_epoch(rows((0.90, 0.1), (0.99, 0.4)), 0.005) == 2  # a real gain still wins


def test_wrong_shapes_are_named(toy):
    import copy
    data = copy.deepcopy(toy)
    data.splits["val"].inputs["b"] = data.splits["val"].inputs["b"][:, :8]
    with pytest.raises(UserError, match="split 'val', modality 'b' has shape \\(100, 8\\); expected \\(100, 16\\)"):
        Trainer(mb.TrainConfig(dataset="toy", method="aux"), "/unused", data, False)


def test_bad_config_values(toy):
    for kwargs, pattern in (({"tau": 1.5}, "tau"), ({"mu": 0}, "mu"), ({"lr": -1}, "lr"),
                            ({"fusion": "late"}, "unknown fusion 'late'"), ({"method": "ogm2"}, "unknown method"),
                            ({"utilization_split": "test"}, "utilization split 'test'"),
                            ({"device": "tpu"}, "device 'tpu'")):
        with pytest.raises(UserError, match=pattern):
            Trainer(mb.TrainConfig(dataset="toy", **kwargs), "/unused", toy, False)


def test_relevant_config_ignores_other_methods_settings():
    from dataclasses import asdict

    from milesbook.config import relevant_config
    base = asdict(mb.TrainConfig(method="vanilla"))
    assert relevant_config({**base, "mu": 0.3, "ogm_alpha": 0.9, "device": "cuda"}) == relevant_config(base)
    assert relevant_config({**base, "lr": 0.01}) != relevant_config(base)
    miles = {**base, "method": "miles"}
    assert relevant_config({**miles, "mu": 0.3}) != relevant_config(miles)
    assert relevant_config({**miles, "ogm_alpha": 0.9}) == relevant_config(miles)
    ogm = {**base, "method": "ogm"}
    assert relevant_config({**ogm, "ogm_alpha": 0.9}) != relevant_config(ogm)


def test_candidates_keep_exactly_the_epochs_that_can_still_be_selected(tmp_path):
    from milesbook.runs import can_be_selected, prune_candidates, save_candidate
    accuracies = [0.90, 0.99, 0.993, 0.97, 0.996, 1.0]
    history, kept = [], []
    for epoch, acc in enumerate(accuracies, start=1):
        history.append({"epoch": epoch, "val_acc_fusion": acc, "val_loss_fusion": 0.1})
        if epoch in can_be_selected(history, 0.005, "acc"):
            save_candidate(tmp_path, epoch, {"w": torch.tensor([float(epoch)])})
        prune_candidates(tmp_path, history, 0.005, "acc")
        kept.append(sorted(int(p.stem[5:]) for p in (tmp_path / "candidates").iterdir()))
    # by hand: within 0.005 of the best so far
    assert kept == [[1], [2], [2, 3], [2, 3], [3, 5], [5, 6]]
    for epochs in range(1, 7):  # whichever epoch training stops at, its choice was kept
        assert select_best_epoch(history[:epochs], 0.005) in kept[epochs - 1]


def test_selected_weights_are_the_selected_epochs_model(tmp_path, toy):
    """selected.pt equals the model a run stopped at its selected epoch ends with (training is
    deterministic on CPU), and the candidates are gone."""
    config = mb.TrainConfig(dataset="toy", method="aux", epochs=5, selection_tolerance=0.05)
    summary = mb.train(config, tmp_path / "long", dataset=toy, progress=False)
    best = summary["best_epoch"]
    assert not (tmp_path / "long" / "candidates").exists()
    selected = mb.runs.selected_weights(tmp_path / "long")
    assert torch.load(tmp_path / "long" / "selected.pt", weights_only=True)["epoch"] == best
    mb.train(mb.TrainConfig(**{**config.to_dict(), "epochs": best}), tmp_path / "short", dataset=toy, progress=False)
    short = torch.load(tmp_path / "short" / "last.pt", weights_only=False)["model"]
    assert selected.keys() == short.keys()
    assert all(torch.equal(selected[k], short[k]) for k in short)
    if best != 5:  # another epoch's weights must differ: the check can fail
        last = torch.load(tmp_path / "long" / "last.pt", weights_only=False)["model"]
        assert not all(torch.equal(selected[k], last[k]) for k in last)


def test_selected_weights_follow_a_finished_run_that_is_extended(tmp_path, toy):
    config = mb.TrainConfig(dataset="toy", method="aux", epochs=2, selection_tolerance=0.0)
    mb.train(config, tmp_path / "run", dataset=toy, progress=False)
    longer = mb.TrainConfig(**{**config.to_dict(), "epochs": 4})
    summary = mb.train(longer, tmp_path / "run", dataset=toy, progress=False, resume=True)
    saved = torch.load(tmp_path / "run" / "selected.pt", weights_only=True)
    assert saved["epoch"] == summary["best_epoch"] and not (tmp_path / "run" / "candidates").exists()
    mb.train(mb.TrainConfig(**{**config.to_dict(), "epochs": summary["best_epoch"]}), tmp_path / "short",
             dataset=toy, progress=False)
    short = torch.load(tmp_path / "short" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(saved["model"][k], short[k]) for k in short)


def test_a_knob_declared_after_a_run_reads_as_its_default():
    from milesbook.config import relevant_config
    now = mb.TrainConfig(method="mslr-k", mslr_lrs={"image": 1e-3, "audio": 1e-3}).to_dict()
    older = {k: v for k, v in now.items() if k != "mslr_init"}
    assert relevant_config(older) == relevant_config(now)
    assert relevant_config({**older, "mslr_init": "unimodal"}) != relevant_config(now)
