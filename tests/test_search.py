"""`milesbook search`: the space each method draws, draws that depend only on (seed, k), a search
that survives kills and shares its study between processes, never reads test, and refuses bad input
in one line without touching what is stored."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from milesbook import cli, search
from milesbook.config import TrainConfig
from milesbook.errors import UserError
from milesbook.methods.miles import MU, TAU
from milesbook.search.draws import BEAT, WORKER, recover, verdict, worker_identity
from tests.test_layout import throwaway  # noqa: F401  (a fixture: a method registered for one test)

TOY = ["--dataset", "toy", "--data-option", "sizes", "[200, 60, 60]", "--batch-size", "100"]
# One thread per process: on a busy 2-core machine, spinning thread pools make an epoch 50× slower.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
BASE = TrainConfig(dataset="toy", dataset_options={"sizes": [200, 60, 60]}, batch_size=100, epochs=1)


def read_trials(folder) -> list[dict]:
    with open(Path(folder) / "trials.csv") as f:
        return list(csv.DictReader(f))


def complete_params(folder) -> dict[int, tuple]:
    """{draw: (lr, tau, mu)} of the COMPLETE trials in a search folder's trials.csv."""
    return {int(r["draw"]): (r["lr"], r["tau"], r["mu"]) for r in read_trials(folder) if r["state"] == "COMPLETE"}


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 4-trial search of miles (1 epoch each), seed 0."""
    out = tmp_path_factory.mktemp("search") / "reference"
    search.search(BASE, out, trials=4, progress=False)
    return out


# -- the space -------------------------------------------------------------------------------------

def test_space_of_each_method_comes_from_its_declarations():
    miles = search.search_space("miles", ("a", "b"))
    assert list(miles) == ["lr", "tau", "mu"]
    assert (miles["lr"].low, miles["lr"].high, miles["lr"].log) == (1e-4, 1e-2, True)
    assert miles["tau"] == TAU.search and miles["mu"] == MU.search and miles["lr"] == search.LR_RANGE
    assert list(search.search_space("miles-lab", ("a", "b"))) == ["lr", "tau", "mu"]
    assert list(search.search_space("aux", ("a", "b"))) == ["lr"]
    assert list(search.search_space("vanilla", ("a", "b"))) == ["lr"]
    # MSLR's encoder rates are its unimodal searches' choices, never drawn: the rest is searched.
    assert list(search.search_space("mslr-s", ("a", "b"))) == ["lr", "mslr_lambda"]
    assert list(search.search_space("mslr-k", ("a", "b"))) == ["lr"]
    assert list(search.search_space("mslr-d", ("a", "b"))) == ["lr", "mslr_window"]
    config = search.trial_config(TrainConfig(method="mslr-s", mslr_lrs={"a": 0.002, "b": 0.003}),
                                 {"lr": 0.001, "mslr_lambda": 0.4}, ("a", "b"))
    assert config.mslr_lrs == {"a": 0.002, "b": 0.003} and config.mslr_lambda == 0.4 and config.lr == 0.001


def test_space_file_overrides_a_range_in_toml_or_yaml(tmp_path):
    toml = tmp_path / "space.toml"
    toml.write_text("[tau]\nlow = 0\nhigh = 0.3\n\n[lr]\nlow = 0.001\nhigh = 0.005\n")
    space = search.search_space("miles", ("a", "b"), search.read_space_file(toml), f"--space {toml}")
    assert (space["tau"].low, space["tau"].high, space["tau"].log) == (0.0, 0.3, False)
    assert isinstance(space["tau"].low, float)  # a float knob stays a float range even when written 0
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (0.001, 0.005, True)
    assert space["tau"].source == f"--space {toml}" and space["mu"] == MU.search
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("mu: {choices: [0.25, 0.5]}\n")
    space = search.search_space("miles", ("a", "b"), search.read_space_file(yaml_file), "y")
    assert space["mu"].choices == (0.25, 0.5) and space["mu"].low is None
    # a knob declared without a range is searched once the file gives its whole range
    ogm = search.search_space("ogm", ("a", "b"), {"ogm_start": {"low": 1, "high": 5}}, "f")
    assert list(ogm) == ["lr", "ogm_alpha", "ogm_start"] and (ogm["ogm_start"].low, ogm["ogm_start"].high) == (1, 5)
    with pytest.raises(UserError, match="'ogm_foo' is not a parameter of ogm; it can search lr, ogm_alpha, ogm_start"):
        search.search_space("ogm", ("a", "b"), {"ogm_foo": {"low": 1, "high": 2}}, "f")


def test_a_new_methods_declared_range_is_searched_and_checked(throwaway):
    space = search.search_space("throwaway", ("a", "b"))
    assert list(space) == ["lr", "throwaway_gain"] and (space["throwaway_gain"].low, space["throwaway_gain"].high,
                                                         space["throwaway_gain"].log) == (0.5, 2.0, True)
    with pytest.raises(UserError, match=r"\[throwaway_gain\] high = 11.0 is outside .* \(in \(0, 10\]\)"):
        search.search_space("throwaway", ("a", "b"), {"throwaway_gain": {"high": 11}}, "f.toml")


@pytest.mark.parametrize("table, value", [("[tau]\nhigh = 1.5", "1.5"), ("[mu]\nlow = 0.0", "0.0"),
                                          ("[lr]\nlow = 0.0", "0.0"), ("[mu]\nchoices = [0.5, 2.0]", "2.0")])
def test_space_outside_the_domain_is_one_line(tmp_path, capsys, table, value):
    space = tmp_path / "space.toml"
    space.write_text(table + "\n")
    code, out, err = run_main(capsys, "search", *TOY, "--out", tmp_path / "s", "--space", space)
    name = table[1:table.index("]")]
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("milesbook: error: --space") and f"[{name}]" in err and f"= {value} is outside" in err
    assert not (tmp_path / "s").exists()


# -- reproducible draws ----------------------------------------------------------------------------

def test_draw_k_depends_only_on_seed_and_k():
    dists = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "tau": FloatDistribution(0.0, 0.5),
             "w": IntDistribution(2, 10), "mode": CategoricalDistribution(["online", "offline"])}

    def draws(seed, order):
        sampler = search.DrawSampler(seed)
        return {k: {n: sampler.sample_independent(None, SimpleNamespace(number=k, user_attrs={}), n, d)
                    for n, d in dists.items()} for k in order}

    forward, backward = draws(7, [0, 1, 2, 3]), draws(7, [3, 1, 0, 2])
    assert forward == backward
    assert draws(8, [0])[0] != forward[0] and forward[0] != forward[1]
    for values in forward.values():
        assert 1e-4 <= values["lr"] <= 1e-2 and 0 <= values["tau"] <= 0.5 and values["w"] in range(2, 11)
        assert values["mode"] in ("online", "offline")
    # a retry carries its draw: trial 9 running draw 1 gets draw 1's values
    retry = SimpleNamespace(number=9, user_attrs={"draw": 1})
    assert search.DrawSampler(7).sample_independent(None, retry, "lr", dists["lr"]) == forward[1]["lr"]


def test_search_in_two_steps_draws_the_same_trials(tmp_path, reference):
    out = tmp_path / "steps"
    search.search(BASE, out, trials=1, progress=False)
    assert len(read_trials(out)) == 1
    search.search(BASE, out, trials=3, progress=False)
    ref = complete_params(reference)
    assert complete_params(out) == {k: ref[k] for k in range(3)}


def test_interrupted_trial_is_given_back_and_its_draw_runs_again(tmp_path, reference, monkeypatch):
    """Ctrl-C during trial 1's training: it is failed, its draw queued; the continued search ends
    with the same draws as an uninterrupted one."""
    trainer = sys.modules["milesbook.train"]  # the module (the package's `train` is the function)
    real = trainer.train

    def interrupted_in_trial_1(config, out, *, on_epoch_end=None, **kwargs):
        def hook(row):
            on_epoch_end(row)
            if Path(out).name == "1":
                raise KeyboardInterrupt
        return real(config, out, on_epoch_end=hook, **kwargs)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(trainer, "train", interrupted_in_trial_1)
    with pytest.raises(KeyboardInterrupt):
        search.search(BASE, out, trials=3, progress=False)
    rows = read_trials(out)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "WAITING")]
    assert rows[2]["draw"] == "1" and rows[2]["retry_of"] == "1" and "interrupted" in rows[1]["note"]
    monkeypatch.setattr(trainer, "train", real)
    search.search(BASE, out, trials=3, progress=False)
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    ref = complete_params(reference)
    assert complete_params(out) == {k: ref[k] for k in range(3)}


# -- kills and many workers ------------------------------------------------------------------------

def test_sigkill_mid_trial_then_the_same_command_finishes_the_study(tmp_path, reference):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "30", "--trials", "3", "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    started = out / "trials" / "1" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not started.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "trials" / "1" / "summary.json").exists(), "the kill came after trial 1 finished"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "search.journal")))
    study = optuna.load_study(study_name=json.loads((out / "study.json").read_text())["study_name"], storage=storage)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.RUNNING]

    again = subprocess.run(args, capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = read_trials(out)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(complete) == 3 and len({r["number"] for r in complete}) == 3
    assert [(r["number"], r["state"], r["retry_of"]) for r in rows] == \
        [("0", "COMPLETE", ""), ("1", "FAIL", ""), ("2", "COMPLETE", "1"), ("3", "COMPLETE", "")]
    assert rows[1]["note"].startswith("lost: its worker stopped")
    ref = complete_params(reference)
    assert complete_params(out) == {k: ref[k] for k in range(3)}  # the kill changed no draw
    assert "3 complete, 0 pruned (of --trials 3), 1 failed, 0 running" in again.stdout


def test_two_commands_and_two_workers_share_one_study_exactly(tmp_path, reference):
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "1", "--trials", "4", "--out", str(out)]
    first = subprocess.Popen(args + ["--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ONE_THREAD)
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    rows = read_trials(out)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert sorted(int(r["draw"]) for r in complete) == [0, 1, 2, 3]  # exactly --trials, each draw once
    assert not [r for r in rows if r["state"] in ("RUNNING", "WAITING")]
    assert complete_params(out) == complete_params(reference)


def _asked(study, n):
    """`n` trials asked for at once by different workers, each given its draw as the worker does."""
    from milesbook.search.draws import DRAW, draw_numbers
    trials = [study.ask() for _ in range(n)]
    for t in trials:
        t.set_user_attr(DRAW, draw_numbers(study.get_trials())[t.number])
    return trials


def test_the_last_slot_is_given_once_and_a_lost_trial_is_redrawn_once():
    study = optuna.create_study(direction="maximize", sampler=search.DrawSampler(3))
    first, second, third = _asked(study, 3)  # three workers ask while only two draws are needed
    assert [verdict(study, t, 2) for t in (first, second)] == ["", ""]
    assert verdict(study, third, 2).startswith("not run: 2 lower draws")
    study.tell(third, state=TrialState.FAIL)
    lr = first.suggest_float("lr", 1e-4, 1e-2, log=True)
    # `first`'s worker died: a process that no longer exists on this machine
    dead = {**worker_identity(), "pid": 2 ** 22 + 17, "start": "0"}
    study._storage.set_trial_system_attr(first._trial_id, WORKER, dead)
    assert recover(study, study.get_trials(), grace=60)
    assert not recover(study, study.get_trials(), grace=60)  # once: the retry is queued already
    retry = study.ask()
    assert retry.user_attrs == {"draw": 0, "retry_of": 0} and verdict(study, retry, 2) == ""
    assert retry.suggest_float("lr", 1e-4, 1e-2, log=True) == lr  # the same draw, drawn again
    assert [t.state for t in study.get_trials()][:3] == [TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL]


def test_a_pruned_draw_counts_towards_trials():
    """With a pruner, --trials counts the draws judged (complete or pruned), as Optuna does: a pruner
    that stops most draws early must make the search cheaper, not run more draws."""
    study = optuna.create_study(direction="maximize", sampler=search.DrawSampler(3))
    first, second, third = _asked(study, 3)
    study.tell(first, 0.9)
    study.tell(second, state=TrialState.PRUNED)
    t = search.tally(study.get_trials())
    assert (t.complete, t.pruned, t.finished) == ({0}, {1}, {0, 1})
    assert verdict(study, third, 2).startswith("not run: 2 lower draws")  # two draws finished already
    study.tell(third, state=TrialState.FAIL)
    fourth, = _asked(study, 1)
    assert verdict(study, fourth, 3) == ""  # with --trials 3, a third draw is still due


def test_only_a_gone_worker_makes_a_trial_lost():
    me, now = worker_identity(), time.time()

    def trial(worker=None, beat=None):
        attrs = {**({WORKER: worker} if worker else {}), **({BEAT: beat} if beat else {})}
        return SimpleNamespace(system_attrs=attrs, datetime_start=SimpleNamespace(timestamp=lambda: now - 1000))

    parent = {**me, "pid": os.getppid(), "start": search.draws._process_start(os.getppid())}
    assert not search.is_lost(trial(parent), grace=10)                       # alive here: never lost
    assert search.is_lost(trial({**me, "pid": 2 ** 22 + 17}), grace=10)     # gone here
    assert search.is_lost(trial({**parent, "start": "1"}), grace=10)        # its pid reused by another
    away = {**me, "host": "another-machine"}
    assert not search.is_lost(trial(away, beat=now - 5), grace=10, now=now)  # fresh heartbeat
    assert search.is_lost(trial(away, beat=now - 50), grace=10, now=now)     # silent past the grace


# -- storage, status, files ------------------------------------------------------------------------

def test_sqlite_storage_and_status(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    code, out, err = run_main(capsys, "search", *TOY, "--epochs", "2", "--method", "aux", "--trials", "2",
                              "--storage", url, "--pruner", "median", "--out", tmp_path / "s")
    assert code == 0, err
    assert f"in {url}" in out and "sampler random (seed 0), pruner median" in out
    assert "2 complete, 0 pruned (of --trials 2)" in out and "lr  log-uniform [0.0001, 0.01]" in out
    code, status, err = run_main(capsys, "search", "--status", tmp_path / "s")
    assert code == 2 and "connects to nothing a file names; pass --storage URL" in err  # a handed study.json
    code, status, err = run_main(capsys, "search", "--status", tmp_path / "s", "--storage", url)
    assert code == 0, err
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    best = search.chosen_trial(study)
    assert status.startswith(f"study {study.study_name} in {url}")
    assert f"chosen: trial {best.number} (draw {best.number}) — validation {best.value:.4f}" in status
    assert f"lr={best.params['lr']:.4g}" in status
    assert [r["state"] for r in read_trials(tmp_path / "s")] == ["COMPLETE", "COMPLETE"]


def test_status_lists_counts_best_and_space(capsys, reference):
    code, out, err = run_main(capsys, "search", "--status", reference)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"study toy-miles-concat-1ep-") and lines[0].endswith(f"in {reference}/search.journal")
    assert "4 complete, 0 pruned (of --trials 4), 0 failed, 0 running, 0 queued; 4 epochs trained in all" in lines[1]
    assert "tau  uniform [0, 0.5]             ours (the paper states no range)" in out
    best = json.loads((reference / "best.json").read_text())
    assert f"chosen: trial {best['trial']} (draw {best['draw']}) — validation {best['value']:.4f}" in out
    assert best["params"] == {k: float(v) for k, v in zip(("lr", "tau", "mu"), complete_params(reference)[best["draw"]])}


def test_trials_csv_and_run_folders_never_touch_test(reference):
    rows = read_trials(reference)
    assert list(rows[0]) == ["number", "state", "draw", "retry_of", "lr", "tau", "mu", "value", "val_loss_fusion",
                             "val_acc_a", "val_acc_b", "best_epoch", "seconds", "run_folder", "note"]
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"] and {r["state"] for r in rows} == {"COMPLETE"}
    for row in rows:
        folder = reference / row["run_folder"]
        summary = json.loads((folder / "summary.json").read_text())
        assert row["run_folder"] == f"trials/{row['number']}" and (folder / "history.csv").exists()
        assert not (folder / "test_history.csv").exists()
        assert not [k for k in summary if "test" in k]
        assert float(row["value"]) == summary["best_val_acc_fusion"]
        assert json.loads((folder / "config.json").read_text())["test_split"] is False
        assert float(row["lr"]) == json.loads((folder / "config.json").read_text())["lr"]
    assert (reference / "history.png").stat().st_size > 0 and (reference / "params.png").stat().st_size > 0


def test_one_complete_trial_writes_no_plot_and_no_error(tmp_path):
    result = search.search(BASE, tmp_path, trials=1, sampler="tpe", pruner="hyperband", progress=False)
    assert result["counts"]["complete"] == 1 and result["sampler"] == "tpe" and result["pruner"] == "hyperband"
    assert not (tmp_path / "history.png").exists() and (tmp_path / "best.json").exists()


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--method", "miels"], "'miels'"), (["--dataset", "toyy"], "'toyy'"), (["--fusion", "max"], "'max'"),
    (["--trials", "0"], "--trials must be ≥ 1, got 0"), (["--sampler", "grid"], "'grid'"),
    (["--tau", "0.3"], "--tau 0.3 is searched"),
    (["--storage", "sqlite:////no/such/folder/search.db"], "cannot open --storage sqlite:////no/such/folder/search.db"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, named):
    code, out, err = run_main(capsys, "search", *TOY, "--out", tmp_path / "s", *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("milesbook: error:") and named in err
    assert not (tmp_path / "s").exists()


def test_a_folder_with_another_study_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = run_main(capsys, "search", *TOY, "--epochs", "1", "--trials", "1", "--out", out)
    assert code == 0, err
    kept = {name: (out / name).read_bytes() for name in ("search.journal", "study.json", "trials.csv")}
    space = tmp_path / "narrow.toml"
    space.write_text("[tau]\nlow = 0.0\nhigh = 0.3\n")
    for flags, named in [(["--space", space], "space.tau.high (stored 0.5, yours 0.3)"),
                         (["--storage", f"sqlite:///{tmp_path / 'x.db'}"], "stored in search.journal"),
                         (["--storage", "sqlite:////no/such/folder/search.db"], "stored in search.journal")]:
        code, _, err = run_main(capsys, "search", *TOY, "--epochs", "1", "--trials", "2", "--out", out, *flags)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert named in err and str(out) in err
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0"] and not (tmp_path / "x.db").exists()


def test_the_search_keeps_each_trials_provenance_in_its_storage(reference):
    import shutil
    from milesbook import provenance
    best = json.loads((reference / "best.json").read_text())
    assert best["provenance"]["threads"] == 1
    assert best["provenance"]["milesbook.results_version"] == provenance.RESULTS_VERSION
    # the storage carries it: the status report still says it without the trial folders
    copy = reference.parent / "without-trials"
    shutil.copytree(reference, copy, ignore=shutil.ignore_patterns("trials"))
    storage, studies = search.status(copy)
    text = search.format_status(studies[0], storage)
    assert "Made under: milesbook" in text and ", 1 thread, deterministic on; data toy " in text


def test_a_journal_cut_by_a_kill_is_repaired_and_only_the_cut_trial_runs_again(tmp_path, reference):
    out = tmp_path / "cut"
    args = [sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "1", "--trials", "3", "--out", str(out)]
    assert subprocess.run(args, capture_output=True, env=ONE_THREAD, timeout=300).returncode == 0
    before = {r["number"]: r for r in read_trials(out) if r["state"] == "COMPLETE"}
    journal = out / "search.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][:len(lines[-1]) // 2])  # a kill mid-write
    status = subprocess.run([sys.executable, "-m", "milesbook", "search", "--status", str(out)],
                            capture_output=True, text=True, env=ONE_THREAD, timeout=120)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert status.stderr.strip().count("\n") == 0 and "last record was cut off" in status.stderr
    assert "no complete trial yet" not in status.stdout
    cut = journal.read_bytes()  # --status only reads: the next search repairs
    assert cut == b"".join(lines[:-1]) + lines[-1][:len(lines[-1]) // 2]
    again = subprocess.run(args, capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert "last record was cut off" in again.stderr and "removed it" in again.stderr
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())  # whole lines only
    rows = read_trials(out)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert sorted(int(r["draw"]) for r in complete) == [0, 1, 2]
    kept = {r["number"]: r for r in complete if r["number"] in before}
    assert len(kept) >= len(before) - 1  # at most the trial whose record was cut ran again
    for number, row in kept.items():
        assert row["value"] == before[number]["value"] and row["seconds"] == before[number]["seconds"]
    assert complete_params(out) == {k: v for k, v in complete_params(reference).items() if k < 3}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_killed_worker_leaves_a_usable_search(tmp_path):
    out = tmp_path / "worker-killed"
    args = [sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "3", "--trials", "6", "--workers", "2",
            "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and \
            not ((out / "trials.csv").exists() and any(r["state"] == "COMPLETE" for r in read_trials(out))):
        time.sleep(0.05)
    workers = [c for c in _children(process.pid)
               if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert workers, "the search ended before a worker could be killed"
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "Traceback" not in err, err
    line = [x for x in err.splitlines() if x.strip()][-1]
    assert line.startswith("milesbook: error: search") and f"(pid {workers[0]}) was killed by SIGKILL" in line
    assert "run the same command again" in line
    assert (out / "best.json").exists() and (out / "trials.csv").exists() and (out / "history.png").exists()
    again = subprocess.run(args, capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len([r for r in read_trials(out) if r["state"] == "COMPLETE"]) == 6


def test_the_journal_lock_is_an_flock_that_refuses_a_link(tmp_path):
    """The journal's lock (`study.journal_lock`): held against another holder, never a soft lock file a
    killed worker would leave behind, and a link in its place refused without touching its target."""
    import threading

    import filelock

    from milesbook.search.study import journal_lock
    held = journal_lock(tmp_path / "search.journal.flock")
    assert held.fallback_to_soft is False
    held.acquire()
    tries = []

    def another_holder():
        try:
            journal_lock(tmp_path / "search.journal.flock").acquire(timeout=0.2)
            tries.append("acquired")
        except filelock.Timeout:
            tries.append("waited")
    for release in (False, True):
        if release:
            held.release()
        thread = threading.Thread(target=another_holder)
        thread.start()
        thread.join()
    assert tries == ["waited", "acquired"]
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / "linked.flock").symlink_to(target)
    with pytest.raises(OSError):
        journal_lock(tmp_path / "linked.flock").acquire()
    assert target.read_text() == "keep"
