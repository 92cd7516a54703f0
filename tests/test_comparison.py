"""The comparison (main job): tables from real runs, the run folder as cache, interrupted resumes."""
import csv
import importlib
import json
from dataclasses import replace

import pytest

import milesbook as mb
from milesbook import comparison as compare_module
from milesbook.comparison import compare, decomposition, summarize
from milesbook.errors import UserError

from .conftest import run_cli

train_module = importlib.import_module("milesbook.train")  # the module: `milesbook.train` is also the function


def test_summarize_hand_computed():
    runs = {"unimodal-a": [{"test_acc_a": 0.9}, {"test_acc_a": 0.8}],
            "vanilla": [{"test_acc_fusion": 1.0, "test_acc_a": 0.6, "test_acc_b": 0.9},
                        {"test_acc_fusion": 0.8, "test_acc_a": 0.4, "test_acc_b": 0.9}]}
    rows = summarize(runs, ("a", "b"))
    assert rows[0]["a_mean"] == pytest.approx(0.85) and rows[0]["b_mean"] is None and rows[0]["fusion_mean"] is None
    van = rows[1]
    assert van["fusion_mean"] == pytest.approx(0.9) and van["fusion_std"] == pytest.approx(0.1414, abs=1e-4)
    assert van["delta_mean"] == pytest.approx(0.4)  # |0.6-0.9| and |0.4-0.9| → 0.3, 0.5


def test_decomposition_sentences():
    rows = [{"method": "unimodal-a", "a_mean": 0.9, "b_mean": None}, {"method": "unimodal-b", "a_mean": None, "b_mean": 0.6},
            {"method": "vanilla", "a_mean": 0.9, "b_mean": 0.2}, {"method": "aux", "a_mean": 0.9, "b_mean": 0.5},
            {"method": "miles", "a_mean": 0.9, "b_mean": 0.55}]
    text = decomposition(rows, ("a", "b"))
    assert "**b**" in text and "40.0 points below" in text
    assert "+30.0 points (75 % of the gap)" in text and "+5.0 points (13 % of the gap)" in text


def test_paired_difference_by_seed_with_t_interval():
    treated = [{"seed": 0, "x": 0.5}, {"seed": 1, "x": 0.7}, {"seed": 2, "x": 0.9}]
    control = [{"seed": 2, "x": 0.6}, {"seed": 0, "x": 0.4}, {"seed": 1, "x": 0.5}]  # paired by seed, not order
    diff = compare_module.paired_difference(treated, control, "x")
    assert diff["mean"] == pytest.approx(0.2) and diff["std"] == pytest.approx(0.1) and diff["n"] == 3
    half = 4.302653 * 0.1 / 3 ** 0.5  # t(0.975, 2 degrees of freedom)
    assert (diff["low"], diff["high"]) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-6)
    one = compare_module.paired_difference(treated[:1], control, "x")
    assert one["n"] == 1 and one["low"] is None and one["mean"] == pytest.approx(0.1)


def test_factorial_table_and_verdicts():
    def runs(values, probes=None):
        return [{"seed": s, "test_acc_b": v, "test_acc_head_b": (probes or values)[s]} for s, v in enumerate(values)]
    summaries = {"vanilla": runs([0.20, 0.22, 0.18], [0.50, 0.52, 0.51]),
                 "miles-lab": runs([0.30, 0.32, 0.28], [0.60, 0.61, 0.62]),
                 "aux": runs([0.80, 0.70, 0.90]), "miles": runs([0.81, 0.72, 0.88])}
    rows = [{"method": "unimodal-a", "a_mean": 0.9, "b_mean": None}, {"method": "unimodal-b", "a_mean": None, "b_mean": 0.8},
            {"method": "vanilla", "b_mean": 0.20, "b_std": 0.02, "probe_b_mean": 0.51, "probe_b_std": 0.01},
            {"method": "miles-lab", "b_mean": 0.30, "b_std": 0.01, "probe_b_mean": 0.61, "probe_b_std": 0.01},
            {"method": "aux", "b_mean": 0.80, "b_std": 0.10}, {"method": "miles", "b_mean": 0.803, "b_std": 0.08}]
    text = compare_module.factorial(summaries, rows, ("a", "b"), "acc")
    assert "| L_AB only, read from the fusion head's b part | vanilla 20.0 ± 2.0 | miles-lab 30.0 ± 1.0 |" in text
    assert "| L_AB only, b encoder read by a detached probe | vanilla 51.0 ± 1.0 | miles-lab 61.0 ± 1.0 | +10.0" in text
    # scheduling effects: +10 on every seed (distinguishable); +1, +2, −2 with aux (not)
    assert "without the auxiliary losses +10.0 (95 % CI +10.0 to +10.0) points read from the fusion part — " \
           "distinguishable from zero" in text
    assert "with them (`miles` − `aux`) +0.3 (95 % CI" in text and text.count("not distinguishable from zero") == 1
    assert compare_module.factorial({k: v for k, v in summaries.items() if k != "miles-lab"}, rows, ("a", "b"), "acc") == ""


def test_fused_factorial_pairs_the_fused_accuracy_by_seed():
    def runs(values):
        return [{"seed": s, "test_acc_fusion": v} for s, v in enumerate(values)]
    summaries = {"vanilla": runs([0.90, 0.88, 0.92]), "miles-lab": runs([0.91, 0.90, 0.92]),
                 "aux": runs([0.93, 0.91, 0.95]), "miles": runs([0.95, 0.92, 0.96])}
    rows = [{"method": m, "seeds": 3, "fusion_mean": sum(r["test_acc_fusion"] for r in v) / 3, "fusion_std": 0.02}
            for m, v in summaries.items()]
    text = compare_module.fused_factorial(summaries, rows, "acc")
    assert "| L_AB only | vanilla 90.0 ± 2.0 | miles-lab 91.0 ± 2.0 | +1.0 (95 % CI" in text
    # per seed: miles − vanilla +5, +4, +4 (interval above zero); miles − aux +2, +1, +1 (its interval,
    # ± 4.30 · 0.58 / √3 = ± 1.4, reaches below zero); aux − vanilla +3, +3, +3
    whole = compare_module.paired_difference(summaries["miles"], summaries["vanilla"], "test_acc_fusion")
    assert f"(`miles` − `vanilla`) moves it by +4.3 (95 % CI {100 * whole['low']:+.1f} to " in text
    assert "points — distinguishable from zero; of that, its scheduling on top of the auxiliary losses (`miles` − " \
           "`aux`) +1.3 (95 % CI -0.1 to +2.8) — not distinguishable from zero — and the auxiliary losses" in text
    assert "The scheduling without them (`miles-lab` − `vanilla`): +1.0 (95 % CI" in text
    assert "| auxiliary-loss effect (Eq. 3 − L_AB, paired) | +3.0 (95 % CI" in text
    assert compare_module.fused_factorial({k: v for k, v in summaries.items() if k != "aux"}, rows, "acc") == ""


def test_compare_reuses_finished_runs_and_continues_interrupted(tmp_path, monkeypatch, capsys):
    base = mb.TrainConfig(epochs=2, dataset_options={"sizes": [200, 60, 60]})
    report = compare("toy", ("vanilla", "miles"), ("concat", "sum"), seeds=2, out=tmp_path, base=base, progress=False)
    assert set(report) == {"concat", "sum"}
    rows = {r["method"]: r for r in report["sum"]["rows"]}
    assert rows["vanilla"]["seeds"] == 2 and 0 <= rows["miles"]["b_mean"] <= 1
    seed1 = json.loads((tmp_path / "miles-sum" / "seed1" / "summary.json").read_text())
    values = [json.loads((tmp_path / "miles-sum" / f"seed{k}" / "summary.json").read_text())["test_acc_fusion"]
              for k in (0, 1)]
    assert rows["miles"]["fusion_mean"] == pytest.approx(sum(values) / 2)
    assert seed1["fusion"] == "sum" and (tmp_path / "unimodal-a" / "seed0" / "summary.json").exists()
    assert (tmp_path / "results.md").read_text().count("| vanilla |") >= 2
    assert (tmp_path / "results-concat.png").stat().st_size > 1000 and (tmp_path / "dynamics-sum.png").exists()
    with open(tmp_path / "results.csv") as f:
        assert {r["epoch_choice"] for r in csv.DictReader(f)} == {"selected", "strict", "last"}

    # second call: nothing is trained again
    calls = []
    monkeypatch.setattr(train_module, "_train", lambda *a, **k: calls.append(a) or {})
    again = compare("toy", ("vanilla", "miles"), ("concat", "sum"), seeds=2, out=tmp_path, base=base, progress=False)
    assert calls == [] and again["sum"]["rows"] == report["sum"]["rows"]
    monkeypatch.undo()

    # a setting only MILES reads leaves vanilla's runs valid; MILES's run is retrained, the old one
    # moved aside (never overwritten), with one line saying why
    retrained = []
    real = train_module._train  # what run_or_reuse calls to train: (config, folder, resume, data, …)
    monkeypatch.setattr(train_module, "_train", lambda c, *a, **k: retrained.append(c.method) or real(c, *a, **k))
    capsys.readouterr()
    compare("toy", ("vanilla", "miles"), ("concat",), seeds=1, out=tmp_path, base=replace(base, mu=0.3), progress=False)
    assert retrained == ["miles"]
    assert "miles-concat/seed0: its configuration differs (mu)" in capsys.readouterr().err
    aside = tmp_path / "miles-concat" / "seed0.stale-1"
    assert json.loads((aside / "config.json").read_text())["mu"] == 0.5 and (aside / "summary.json").exists()
    assert json.loads((tmp_path / "miles-concat" / "seed0" / "config.json").read_text())["mu"] == 0.3
    monkeypatch.undo()

    # an interrupted run (checkpoint, no summary) is resumed, not restarted
    folder = tmp_path / "vanilla-concat" / "seed1"
    history_before = mb.read_history(folder)
    (folder / "summary.json").unlink()
    resumed = []
    real_train = train_module._train
    monkeypatch.setattr(train_module, "_train", lambda *a, **k: resumed.append(a[2]) or real_train(*a, **k))
    compare("toy", ("vanilla", "miles"), ("concat",), seeds=2, out=tmp_path, base=base, progress=False)
    assert resumed == [True, False]  # vanilla's seed 1 continues; MILES's seed 0 (μ 0.3 now) is retrained
    assert mb.read_history(folder) == history_before
    assert (tmp_path / "miles-concat" / "seed0.stale-2").is_dir()


def test_compare_all_methods_reports_gblend_cost(tmp_path):
    base = mb.TrainConfig(epochs=2, dataset_options={"sizes": [200, 60, 60]}, gblend_mode="offline", gblend_every=1)
    report = compare("toy", ["all"], ("concat",), seeds=1, out=tmp_path, base=base, progress=False)
    methods = [r["method"] for r in report["concat"]["rows"]]
    assert methods == ["unimodal-a", "unimodal-b", "vanilla", "miles-lab", "aux", "miles", "mses", "mslr-k",
                       "mslr-s", "mslr-d", "ogm", "ogm-ge", "gblend", "mmpareto", "pmr", "mla", "inforeg", "aim-r",
                       "arl", "remix", "dgl", "aug"]
    assert report["concat"]["gblend_extra_epochs"] == [3]  # one estimation: 3 heads × 1 epoch
    text = (tmp_path / "results.md").read_text()
    assert "trained 3 extra epochs per run" in text and "MSLR rates" in text
    summary = json.loads((tmp_path / "gblend-concat" / "seed0" / "summary.json").read_text())
    assert summary["gblend_estimations"] == 1 and summary["gblend_floor_bound"] in (0, 1)
    assert f"bound in {summary['gblend_floor_bound']} of 1 weight estimations over 1 run(s)" in text
    searched = json.loads((tmp_path / "mslr-k-concat" / "seed0" / "config.json").read_text())["mslr_lrs"]
    grid = (1e-3 / 3, 1e-3, 3e-3)  # the global rate × ⅓, 1, 3
    assert set(searched) == {"a", "b"}
    assert all(any(v == pytest.approx(g) for g in grid) for v in searched.values())


def test_compare_command_prints_table(tmp_path):
    result = run_cli("compare", "--dataset", "toy", "--epochs", "2", "--seeds", "1", "--data-option", "sizes",
                     "[200, 60, 60]", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| method | multimodal | a | b | Δ |" in result.stdout
    assert "| miles |" in result.stdout and (tmp_path / "results.md").exists()
    # the default methods are the 2 × 2, reported with the weak side's probe and both scheduling effects
    assert "| miles-lab |" in result.stdout and "| aux |" in result.stdout and "| vanilla |" in result.stdout
    assert "Scheduling effect on the" in result.stdout and "(one seed)" in result.stdout


def test_cells_show_a_spread_only_with_several_seeds():
    assert compare_module.cell({"seeds": 3, "b_mean": 0.5, "b_std": 0.012}, "b") == "50.0 ± 1.2"
    assert compare_module.cell({"seeds": 1, "b_mean": 0.998, "b_std": 0.0}, "b") == "99.8"  # not "99.8 ± 0.0"
    assert compare_module.cell({"seeds": 1, "b_mean": None, "b_std": None}, "b") == "–"
    table = compare_module.markdown_table([{"method": "vanilla", "seeds": 1, "metric": "acc", "fusion_mean": 0.99,
                                            "fusion_std": 0.0, "a_mean": 0.98, "a_std": 0.0, "b_mean": 0.41,
                                            "b_std": 0.0, "delta_mean": 0.57, "delta_std": 0.0}], ("a", "b"))
    assert "| vanilla | 99.0 | 98.0 | 41.0 | 57.0 |" in table and "±" not in table


def test_the_report_says_why_mslr_s_repeats_mslr_k_when_the_rates_are_equal(monkeypatch, tmp_path):
    found = {"grid": [1e-3 / 3, 1e-3, 3e-3], "best": {"a": 1e-3, "b": 1e-3}}
    monkeypatch.setattr(compare_module, "unimodal_lr_search", lambda *a, **k: found)
    base = mb.TrainConfig()
    config, note = compare_module._mslr_base(base, ["mslr-k", "mslr-s"], None, tmp_path, False, None)
    assert config.mslr_lrs == {"a": 1e-3, "b": 1e-3}
    assert note.endswith("its rows are MSLR-K's runs again.")
    found["best"] = {"a": 1e-3, "b": 3e-3}
    assert "MSLR-K's runs again" not in compare_module._mslr_base(base, ["mslr-k", "mslr-s"], None, tmp_path, False, None)[1]
