"""`milesbook compare --from-search`: each search's chosen setting retrained over seeds the search
never used, the best trial's own test score beside it, and the paired decomposition at tuned settings."""
import csv
import json
import statistics

import pytest

from milesbook.comparison import paired_difference
from milesbook.tuned import compare_tuned, fresh_seeds, run_many, t_interval
from milesbook.config import TrainConfig
from milesbook.errors import UserError

from .test_search import TOY, run_main


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """Searches of vanilla, aux and miles (3 trials of 2 epochs each), one folder per method, made by
    one `milesbook search --method a,b,c` command."""
    import milesbook.cli as cli
    out = tmp_path_factory.mktemp("tuned") / "search"
    code = cli.main(["search", *TOY, "--epochs", "2", "--trials", "3", "--method", "vanilla,aux,miles",
                     "--out", str(out)])
    assert code == 0
    return out


def test_a_search_of_several_methods_writes_one_study_per_folder(searches, capsys):
    assert sorted(p.name for p in searches.iterdir()) == ["aux-concat", "miles-concat", "vanilla-concat"]
    for folder in searches.iterdir():
        best = json.loads((folder / "best.json").read_text())
        assert best["config"]["method"] == folder.name.removesuffix("-concat") and best["trials_complete"] == 3
    code, out, err = run_main(capsys, "search", "--status", searches)
    assert code == 0, err
    assert [line.split()[1].split("-")[1] for line in out.splitlines() if line.startswith("study ")] == \
        ["aux", "miles", "vanilla"]


def test_tuned_comparison_retrains_each_chosen_setting_on_fresh_seeds(searches, tmp_path):
    report = compare_tuned(searches, seeds=2, out=tmp_path / "cmp", progress=False)["concat"]
    assert json.loads((tmp_path / "cmp" / "seeds.json").read_text())["retrained"] == [1, 2]
    with open(tmp_path / "cmp" / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    saved_report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    for method in ("vanilla", "aux", "miles"):
        best = json.loads((searches / f"{method}-concat" / "best.json").read_text())
        runs = [json.loads((tmp_path / "cmp" / f"{method}-concat" / f"seed{s}" / "summary.json").read_text())
                for s in (1, 2)]
        for run in runs:  # the chosen setting, a fresh seed, test read
            saved = json.loads((tmp_path / "cmp" / f"{method}-concat" / f"seed{run['seed']}" / "config.json").read_text())
            assert saved["lr"] == best["config"]["lr"] and saved["test_split"] is True
        assert float(rows[method]["test_mean"]) == pytest.approx(statistics.fmean(r["test_acc_fusion"] for r in runs))
        # The paper-style number: the chosen trial itself (its seed), which reproduces the search's value.
        assert float(rows[method]["best_trial_val"]) == pytest.approx(best["value"], abs=1e-12)
        paper = json.loads((tmp_path / "cmp" / f"{method}-concat" / "search-seed0" / "summary.json").read_text())
        assert float(rows[method]["best_trial_test"]) == paper["test_acc_fusion"]
        assert saved_report["fusion_results"]["concat"]["methods"][method]["best_trial"] == \
            {r: paper[f"test_acc_{r}"] for r in ("fusion", "a", "b")}
        low, high = t_interval([r["test_acc_fusion"] for r in runs])
        assert float(rows[method]["ci_low"]) == pytest.approx(low) and low <= float(rows[method]["test_mean"]) <= high
    # miles − aux paired by seed, from the same runs the table reads.
    diff = paired_difference(report["summaries"]["miles"], report["summaries"]["aux"], "test_acc_b")
    by_seed = {r["seed"]: r["test_acc_b"] for r in report["summaries"]["aux"]}
    assert diff["mean"] == pytest.approx(statistics.fmean(r["test_acc_b"] - by_seed[r["seed"]]
                                                          for r in report["summaries"]["miles"]))
    text = (tmp_path / "cmp" / "results.md").read_text()
    assert "retrained over 2 seed(s) the searches never used (1, 2)" in text
    assert "reproduce the search's validation values exactly" in text
    assert "(`aux` − `vanilla`)" in report["decomposition"]


def test_mslr_searches_at_the_unimodal_searches_rates(tmp_path, capsys):
    """As the MSLR paper: each encoder at the rate its unimodal search chose, MSLR's own search drawing
    the rest; without the unimodal searches, one line; the tuned comparison checks the rates."""
    import shutil
    out = tmp_path / "search"
    code, _, err = run_main(capsys, "search", *TOY, "--epochs", "1", "--trials", "2", "--method", "mslr-k",
                            "--out", out / "mslr-k-concat")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unimodal" in err and "Traceback" not in err
    assert not (out / "mslr-k-concat").exists()
    code, _, err = run_main(capsys, "search", *TOY, "--epochs", "1", "--trials", "2", "--method", "mslr-k,unimodal",
                            "--out", out)
    assert code == 0, err
    chosen = {m: json.loads((out / f"unimodal-{m}" / "best.json").read_text())["params"]["lr"] for m in ("a", "b")}
    best = json.loads((out / "mslr-k-concat" / "best.json").read_text())
    assert best["config"]["mslr_lrs"] == chosen and list(best["params"]) == ["lr"]
    for trial in (out / "mslr-k-concat" / "trials").iterdir():
        assert json.loads((trial / "config.json").read_text())["mslr_lrs"] == chosen
    report = compare_tuned(out, seeds=1, out=tmp_path / "cmp", progress=False)["concat"]
    assert [r["method"] for r in report["rows"]] == ["unimodal-a", "unimodal-b", "mslr-k"]
    assert "encoders at their unimodal rates" in (tmp_path / "cmp" / "results.md").read_text()
    # A unimodal search chose again (here: its record edited) after MSLR's search: refused in one line.
    record = json.loads((out / "unimodal-a" / "best.json").read_text())
    (out / "unimodal-a" / "best.json").write_text(json.dumps({**record, "params": {"lr": 0.5}}))
    with pytest.raises(UserError, match="not the ones the unimodal searches chose"):
        compare_tuned(out, seeds=1, out=tmp_path / "cmp", progress=False)
    shutil.rmtree(out / "unimodal-a")
    with pytest.raises(UserError, match="unimodal-a is not there"):
        compare_tuned(out, seeds=1, out=tmp_path / "cmp", progress=False)


def test_fresh_seeds_skip_every_search_seed():
    records = [{"config": {"seed": 0}}, {"config": {"seed": 2}}]
    assert fresh_seeds(records, 3) == [1, 3, 4]


def test_run_many_in_worker_processes(tmp_path):
    base = TrainConfig(dataset="toy", dataset_options={"sizes": [200, 60, 60]}, batch_size=100, epochs=1,
                       method="aux")
    jobs = [(TrainConfig(**{**base.to_dict(), "seed": s}), tmp_path / f"seed{s}") for s in (3, 4)]
    summaries = run_many(jobs, workers=2, progress=False)
    assert [s["seed"] for s in summaries] == [3, 4]
    for summary, (_, folder) in zip(summaries, jobs):
        assert summary == json.loads((folder / "summary.json").read_text())
    assert run_many(jobs, workers=1, progress=False) == summaries  # finished runs are read back


def test_from_search_refuses_duplicates_and_flags_it_ignores(searches, tmp_path, capsys):
    import shutil
    shutil.copytree(searches, tmp_path / "s")
    shutil.copytree(tmp_path / "s" / "aux-concat", tmp_path / "s" / "aux-again")
    code, out, err = run_main(capsys, "compare", "--from-search", tmp_path / "s")
    assert code == 2 and "holds two searches of aux/concat" in err
    code, out, err = run_main(capsys, "compare", "--from-search", searches, "--methods", "vanilla")
    assert code == 2 and "leave out --methods" in err
    code, out, err = run_main(capsys, "compare", "--from-search", searches, "--seeds", "0")
    assert code == 2 and "--seeds must be ≥ 1, got 0" in err


def test_unimodal_references_share_the_searches_settings(searches, tmp_path):
    compare_tuned(searches, seeds=1, out=tmp_path / "cmp", progress=False)
    reference = json.loads((tmp_path / "cmp" / "unimodal-a" / "seed1" / "config.json").read_text())
    searched = json.loads((searches / "aux-concat" / "best.json").read_text())["config"]
    assert (reference["epochs"], reference["batch_size"], reference["dataset_options"]) == \
        (searched["epochs"], searched["batch_size"], searched["dataset_options"]) == (2, 100, {"sizes": [200, 60, 60]})
    assert reference["lr"] == TrainConfig().lr


def test_from_search_bad_input(tmp_path, capsys):
    code, out, err = run_main(capsys, "compare", "--from-search", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "holds no finished search" in err
    code, out, err = run_main(capsys, "compare", "--from-search", tmp_path / "nowhere")
    assert code == 2 and "no such folder" in err
