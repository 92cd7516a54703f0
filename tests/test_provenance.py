"""Runs you can reproduce: provenance in every run folder, a cache that reuses a run only under the
same conditions (and moves the others aside), no resume under other conditions, `--threads`, and
`milesbook verify` on runs and reports."""
import json
import re
import tomllib
from pathlib import Path

import pytest
import torch

import milesbook as mb
from milesbook import provenance
from milesbook.datasets import REGISTRY, MultimodalDataset, Split, register
from milesbook.errors import UserError
from milesbook.verify import compare_records, verify_report, verify_run

from .conftest import run_cli, without_seconds

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides):
    return mb.TrainConfig(dataset="toy", **{"epochs": 2, **overrides})


def test_every_run_folder_records_its_provenance(tmp_path, toy):
    summary = mb.train(_config(method="miles", threads=2), tmp_path, dataset=toy, progress=False)
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["threads"] == 2 and record["device.kind"] == "cpu"
    assert record["milesbook.results_version"] == provenance.RESULTS_VERSION
    assert record["torch.version"] == torch.__version__ and record["torch.git_version"] == torch.version.git_version
    assert record["cpu.capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["deterministic"] == "on"
    assert record["data.fingerprint"] == provenance.data_fingerprint(toy) and record["data.name"] == "toy"
    assert set(provenance.NUMBER_ENV) == set(record["env"])
    assert summary["provenance"] == record
    assert json.loads((tmp_path / "config.json").read_text())["threads"] == 2
    # the process's own settings are back after the run
    assert not torch.are_deterministic_algorithms_enabled()


def test_fingerprint_changes_with_any_sample_and_not_otherwise(toy):
    before = provenance.data_fingerprint(toy)
    assert provenance.data_fingerprint(toy) == before
    edited = Split({m: x.clone() for m, x in toy.splits["val"].inputs.items()}, toy.splits["val"].labels.clone())
    edited.inputs["a"][7, 0] += 1e-3
    changed = MultimodalDataset(**{**toy.__dict__, "splits": {**toy.splits, "val": edited}})
    assert provenance.data_fingerprint(changed) != before
    relabelled = Split(toy.splits["test"].inputs, toy.splits["test"].labels.clone())
    relabelled.labels[0] = (relabelled.labels[0] + 1) % toy.num_classes
    assert provenance.data_fingerprint(MultimodalDataset(**{**toy.__dict__, "splits": {**toy.splits, "test": relabelled}})) != before
    noisier = MultimodalDataset(**{**toy.__dict__, "train_noise_std": {"a": 0.5}})
    assert provenance.data_fingerprint(noisier) != before


def test_a_run_is_reused_only_under_the_same_threads(tmp_path, toy, capsys):
    folder = tmp_path / "seed0"
    first = mb.run_or_reuse(_config(method="aux", threads=1), folder, toy, progress=False)
    again = mb.run_or_reuse(_config(method="aux", threads=1), folder, toy, progress=False)
    assert again == first and not folder.with_name("seed0.stale-1").exists()
    capsys.readouterr()
    other = mb.run_or_reuse(_config(method="aux", threads=2), folder, toy, progress=False)
    assert other["provenance"]["threads"] == 2
    aside = folder.with_name("seed0.stale-1")
    assert json.loads((aside / "summary.json").read_text()) == first  # nothing lost
    err = capsys.readouterr().err
    assert "retraining" in err and "threads" in err and "seed0.stale-1" in err


def test_editing_one_sample_of_a_registered_dataset_retrains(tmp_path, toy, capsys):
    arrays = {"a": toy.splits["train"].inputs["a"].clone()}

    @register("edited-toy", ("a", "b"), "toy whose training inputs a test edits")
    def load_edited():
        train = Split({"a": arrays["a"].clone(), "b": toy.splits["train"].inputs["b"]}, toy.splits["train"].labels)
        return MultimodalDataset(**{**toy.__dict__, "name": "edited-toy", "splits": {**toy.splits, "train": train}})
    try:
        config = mb.TrainConfig(dataset="edited-toy", method="vanilla", epochs=1)
        folder = tmp_path / "run"
        first = mb.run_or_reuse(config, folder, progress=False)
        assert mb.run_or_reuse(config, folder, progress=False) == first
        arrays["a"][3, 1] += 0.5  # one number of one training sample
        capsys.readouterr()
        second = mb.run_or_reuse(config, folder, progress=False)
        assert second["provenance"]["data.fingerprint"] != first["provenance"]["data.fingerprint"]
        assert "data.fingerprint" in capsys.readouterr().err
        assert (tmp_path / "run.stale-1" / "summary.json").exists()
    finally:
        REGISTRY.pop("edited-toy")


def _own_copy(toy, name="own-toy"):
    """A dataset object of our own (the session's toy stays untouched), as `from_arrays` users hold one."""
    return MultimodalDataset(**{**toy.__dict__, "name": name, "splits": {
        s: Split({m: x.clone() for m, x in split.inputs.items()}, split.labels.clone()) for s, split in toy.splits.items()}})


def test_editing_a_sample_of_the_same_dataset_object_in_place_retrains(tmp_path, toy, capsys):
    """The fingerprint of one dataset object is not cached past a change: not through torch (whose
    version counter sees it), not through a numpy view of a tensor, `.data` or an array a tensor
    shares (which it does not see)."""
    import numpy as np
    data = _own_copy(toy)
    shared = np.array(data.splits["val"].inputs["b"].numpy())
    data.splits["val"].inputs["b"] = torch.from_numpy(shared)  # memory shared with numpy
    config = mb.TrainConfig(dataset="toy", method="vanilla", epochs=1)
    folder = tmp_path / "run"
    seen = [mb.run_or_reuse(config, folder, data, progress=False)["provenance"]["data.fingerprint"]]
    assert mb.run_or_reuse(config, folder, data, progress=False)["provenance"]["data.fingerprint"] == seen[0]
    assert not folder.with_name("run.stale-1").exists()  # unchanged: reused
    edits = [lambda: data.splits["train"].inputs["a"][0].add_(1),          # torch, in place
             lambda: data.splits["train"].inputs["a"].numpy().__setitem__((1, 0), 7.0),  # a numpy view
             lambda: data.splits["test"].labels.data.__setitem__(0, (data.splits["test"].labels[0] + 1) % toy.num_classes),
             lambda: shared.__setitem__((2, 1), -3.0)]                     # the numpy array a tensor shares
    for k, edit in enumerate(edits, start=1):
        edit()
        capsys.readouterr()
        again = mb.run_or_reuse(config, folder, data, progress=False)["provenance"]["data.fingerprint"]
        assert again not in seen and again == provenance._fingerprint(data), f"edit {k} not seen"
        assert folder.with_name(f"run.stale-{k}").is_dir() and "data.fingerprint" in capsys.readouterr().err
        seen.append(again)
    data.splits["train"].inputs["a"][0] += 1  # the brief's own spelling of an edit
    assert provenance.data_fingerprint(data) not in seen


def test_a_folder_is_hashed_once_while_its_files_are_unchanged(tmp_path, monkeypatch):
    """A folder of your own data is memory-mapped: its fingerprint is reused while every file has the
    size, mtime and ctime it had when it was read (and was not modified within `_SETTLED_NS` before,
    when a file system's coarse clock could hide a second write); an edit on disk is seen."""
    import time

    import numpy as np
    from milesbook.datasets import Rows, from_folder
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, array in {"a": rng.normal(size=(90, 5)).astype(np.float32), "b": rng.normal(size=(90, 3)),
                        "labels": np.arange(90) % 3}.items():
        np.save(folder / f"{name}.npy", array)
    data = from_folder(folder)
    reads = []
    chunks = Rows.chunks

    def counted(self):
        reads.append(1)
        return chunks(self)
    monkeypatch.setattr(Rows, "chunks", counted)
    first = provenance.data_fingerprint(data)
    assert reads and provenance.data_fingerprint(data) == first
    assert len(reads) == 12  # just written: too recent to trust, read again (2 modalities × 3 splits, twice)
    monkeypatch.setattr(provenance, "_SETTLED_NS", 0)
    assert provenance.data_fingerprint(data) == first and len(reads) == 18  # hashed, and now cached
    assert provenance.data_fingerprint(data) == first and len(reads) == 18  # not read again
    data.splits["train"].labels[0] = (data.splits["train"].labels[0] + 1) % 3  # labels live in memory
    relabelled = provenance.data_fingerprint(data)
    assert relabelled != first and len(reads) == 24
    time.sleep(0.05)  # past a coarse file-system clock's tick
    with open(folder / "a.npy", "r+b") as f:  # one number of the file, in place: same size
        f.seek(-4, 2)
        f.write(np.float32(123.0).tobytes())
    edited = provenance.data_fingerprint(data)
    assert edited not in (first, relabelled) and edited == provenance._fingerprint(data)


def test_a_run_is_never_resumed_under_other_conditions(tmp_path, toy):
    mb.train(_config(method="miles", epochs=1), tmp_path, dataset=toy, progress=False)
    record = json.loads((tmp_path / "provenance.json").read_text())
    (tmp_path / "provenance.json").write_text(json.dumps({**record, "cpu.capability": "AVX2"}))
    with pytest.raises(UserError, match=r"cannot be resumed: made under other conditions \(it cannot be continued\): cpu.capability \(recorded AVX2, now"):
        mb.train(_config(method="miles", epochs=2), tmp_path, dataset=toy, resume=True, progress=False)
    assert len(mb.read_history(tmp_path)) == 1  # nothing written
    # compare's cache moves it aside instead and trains afresh: nothing is lost
    summary = mb.run_or_reuse(_config(method="miles", epochs=2), tmp_path, toy, progress=False)
    assert summary["epochs"] == 2
    assert json.loads((tmp_path.with_name(tmp_path.name + ".stale-1") / "provenance.json").read_text())[
        "cpu.capability"] == "AVX2"


def test_resume_under_other_threads_is_one_line_on_the_cli(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", "toy", "--epochs", "1", "--out", out).returncode == 0
    done = run_cli("train", "--dataset", "toy", "--epochs", "2", "--threads", "2", "--out", out, "--resume")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "threads" in done.stderr
    assert len(mb.read_history(out)) == 1


def test_equal_provenance_gives_identical_runs_and_a_thread_count_is_recorded(tmp_path, toy):
    one = mb.train(_config(method="miles", threads=1), tmp_path / "a", dataset=toy, progress=False)
    two = mb.train(_config(method="miles", threads=1), tmp_path / "b", dataset=toy, progress=False)
    assert without_seconds(mb.read_history(tmp_path / "a")) == without_seconds(mb.read_history(tmp_path / "b"))
    assert one["test_acc_fusion"] == two["test_acc_fusion"]


def test_verify_passes_on_a_fresh_run_and_fails_on_a_tampered_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", "toy", "--epochs", "2", "--out", out).returncode == 0
    ok = run_cli("verify", out)
    assert ok.returncode == 0 and "verified: 2 epochs identical" in ok.stdout
    # one digit of one cell changed
    text = (out / "history.csv").read_text().splitlines()
    cells = text[2].split(",")
    cells[4] = repr(float(cells[4]) + 1e-9)
    (out / "history.csv").write_text("\n".join([*text[:2], ",".join(cells), *text[3:]]) + "\n")
    bad = run_cli("verify", out, "--epochs", "2")
    assert bad.returncode == 1 and "first difference in history.csv, epoch 2" in bad.stdout
    assert "Traceback" not in bad.stderr


def test_verify_checks_the_first_epochs_and_that_the_files_agree(tmp_path, toy, capsys):
    mb.train(_config(method="miles", epochs=3), tmp_path, dataset=toy, progress=False)
    assert verify_run(tmp_path, epochs=1, dataset=toy, progress=False) == 0
    assert "verified: 1 epochs identical (history.csv, test_history.csv;" in capsys.readouterr().out
    lines = (tmp_path / "history.csv").read_text().splitlines()
    (tmp_path / "history.csv").write_text("\n".join(lines[:-1]) + "\n")  # its last epoch dropped
    assert verify_run(tmp_path, dataset=toy, progress=False) == 1
    assert "history.csv has 2 epochs but summary.json says 3" in capsys.readouterr().out


def test_a_finished_run_continued_and_killed_is_not_taken_as_finished(tmp_path, toy):
    mb.train(_config(method="aux", epochs=1), tmp_path, dataset=toy, progress=False)

    def killed(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        mb.train(_config(method="aux", epochs=3), tmp_path, dataset=toy, progress=False, resume=True, on_epoch_end=killed)
    assert not (tmp_path / "summary.json").exists()  # the 1-epoch summary is gone with the 1-epoch run
    summary = mb.run_or_reuse(_config(method="aux", epochs=3), tmp_path, toy, progress=False)
    assert summary["epochs"] == 3 and not tmp_path.with_name(tmp_path.name + ".stale-1").exists()
    # fewer epochs than the run has: not "resumed" into a longer run, retrained beside it
    shorter = mb.run_or_reuse(_config(method="aux", epochs=2), tmp_path, toy, progress=False)
    assert shorter["epochs"] == 2 and len(mb.read_history(tmp_path)) == 2
    assert len(mb.read_history(tmp_path.with_name(tmp_path.name + ".stale-1"))) == 3


def test_verify_retrains_instead_of_trusting_the_history(tmp_path, toy, capsys):
    # a run whose history was made with other settings than its config.json says
    mb.train(_config(method="miles", tau=0.05), tmp_path, dataset=toy, progress=False)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "tau": 0.4, "mu": 0.1}))
    assert verify_run(tmp_path, dataset=toy, progress=False) == 1
    assert "NOT REPRODUCED" in capsys.readouterr().out


def test_verify_under_another_provenance_says_so(tmp_path, toy, capsys):
    mb.train(_config(method="aux"), tmp_path, dataset=toy, progress=False)
    record = json.loads((tmp_path / "provenance.json").read_text())
    (tmp_path / "provenance.json").write_text(json.dumps({**record, "torch.git_version": "another build"}))
    assert verify_run(tmp_path, dataset=toy, progress=False) == 0  # still identical here
    assert "bitwise equality is not expected" in capsys.readouterr().out
    (tmp_path / "test_history.csv").write_text((tmp_path / "test_history.csv").read_text().replace("0.", "0.0", 1))
    assert verify_run(tmp_path, dataset=toy, progress=False) == 3
    assert "as expected under another provenance" in capsys.readouterr().out


def test_verify_refuses_what_it_cannot_check(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(mb.TrainConfig(dataset="toy").to_dict()))
    done = run_cli("verify", tmp_path)
    assert done.returncode == 2 and "no provenance.json" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("verify", tmp_path / "nothing")
    assert done.returncode == 2 and "neither a run folder" in done.stderr


def test_compare_workers_give_the_same_numbers_and_the_report_verifies(tmp_path, capsys):
    base = mb.TrainConfig(epochs=2)
    kwargs = dict(dataset="toy", methods=["vanilla", "miles-lab", "aux", "miles"], seeds=2, base=base, progress=False)
    mb.compare(out=tmp_path / "one", workers=1, **kwargs)
    mb.compare(out=tmp_path / "two", workers=2, **kwargs)
    assert (tmp_path / "one" / "results.csv").read_text() == (tmp_path / "two" / "results.csv").read_text()
    text = (tmp_path / "one" / "results.md").read_text()
    assert re.search(r"Made under: milesbook \S+ \(results v\d+.*1 thread, deterministic on; data toy [0-9a-f]{16}\.",
                     text)
    capsys.readouterr()
    assert verify_report(tmp_path / "one", only=["miles"], progress=False) == 0
    out = capsys.readouterr().out
    assert "bit for bit" in out and "miles − aux" not in out  # aux was not re-run: its effect is not checked
    assert verify_report(tmp_path / "one", progress=False) == 0
    assert "every conclusion identical, bit for bit (and results.csv byte for byte)" in capsys.readouterr().out
    with pytest.raises(UserError, match="lies inside the report folder"):
        verify_report(tmp_path / "one", out=tmp_path / "one" / "again", progress=False)
    # the table people read edited, report.json not: caught
    table = (tmp_path / "two" / "results.csv").read_text()
    (tmp_path / "two" / "results.csv").write_text(table.replace("0.", "0.1", 1))
    assert verify_report(tmp_path / "two", progress=False) == 1
    assert "results.csv does not" in capsys.readouterr().out
    # a conclusion edited while the numbers stay: caught
    record = json.loads((tmp_path / "one" / "report.json").read_text())
    effect = record["fusion_results"]["concat"]["effects"]["miles − aux"]
    effect["verdict"] = "distinguishable from zero" if effect["verdict"].startswith("not") else "not distinguishable from zero"
    (tmp_path / "one" / "report.json").write_text(json.dumps(record))
    assert verify_report(tmp_path / "one", progress=False) == 1
    assert "miles − aux" in capsys.readouterr().out
    # a committed cell changed: under the same provenance it must fail
    record = json.loads((tmp_path / "one" / "report.json").read_text())
    values = record["fusion_results"]["concat"]["methods"]["miles"]["values"]["fusion"]
    values[0] -= 0.01
    (tmp_path / "one" / "report.json").write_text(json.dumps(record))
    assert verify_report(tmp_path / "one", only=["miles"], progress=False) == 1
    assert "NOT REPRODUCED" in capsys.readouterr().out


def _record(values: dict, verdict="not distinguishable from zero", test_size=100):
    return {"test_size": test_size, "fusion_results": {"concat": {
        "methods": {m: {"seeds": [0, 1, 2], "values": {"fusion": v}} for m, v in values.items()},
        "effects": {"miles − aux": {"difference": None, "verdict": verdict}}}}}


def test_the_statistical_check_by_hand():
    rerun = _record({"miles": [0.80, 0.84, 0.82], "aux": [0.90, 0.90, 0.90]})
    # mean 0.82, sd 0.02, t(0.9875 quantile at 2 dof over 2 cells: level 0.975) = 6.205 → ±0.0717
    inside = compare_records(_record({"miles": [0.75, 0.76, 0.77], "aux": [0.905, 0.905, 0.905]}), rerun)
    assert inside["level"] == pytest.approx(0.975)
    assert [c[-1] for c in inside["cells"]] == [True, True]  # 0.76 > 0.82 − 0.0717; 0.905 within one sample
    low, high = inside["cells"][0][4:6]
    assert (low, high) == pytest.approx((0.82 - 6.2053 * 0.02 / 3 ** 0.5, 0.82 + 6.2053 * 0.02 / 3 ** 0.5), abs=1e-4)
    assert inside["consistent"] and not inside["identical"]
    outside = compare_records(_record({"miles": [0.70, 0.70, 0.70], "aux": [0.92, 0.92, 0.92]}), rerun)
    assert [c[-1] for c in outside["cells"]] == [False, False] and not outside["consistent"]
    flipped = compare_records(_record({"miles": [0.80, 0.84, 0.82], "aux": [0.9] * 3}, verdict="distinguishable from zero"),
                              rerun)
    assert not flipped["identical"] and not flipped["consistent"]  # equal numbers, another conclusion
    assert flipped["conclusions"] == [("concat", "miles − aux", "distinguishable from zero", "not distinguishable from zero")]


def test_version_is_one_number_and_citable():
    version = mb.__version__
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == version
    assert re.search(rf"^version: {re.escape(version)}$", (ROOT / "CITATION.cff").read_text(), re.M)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {version}" in changelog and f"results version {provenance.RESULTS_VERSION}" in changelog
