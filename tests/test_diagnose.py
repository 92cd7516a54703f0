"""`milesbook diagnose`: the verdict follows its stated rule, and it reads the very runs `compare` reads."""
import csv
import json

import pytest

import milesbook.cli as cli
from milesbook.diagnose import STARVED_POINTS, _markdown, _read, _rule_text

from .test_search import TOY


def runs(values: dict[str, list[float]], key: str) -> list[dict]:
    return [{"seed": s, key: v} for s, v in enumerate(values)]


def fake(alone: dict, probe: dict, part: dict, fused=(0.9, 0.9, 0.9)) -> dict:
    """Summaries of the unimodal models and vanilla, by seed, as compare returns them."""
    summaries = {f"unimodal-{m}": runs(v, f"test_acc_{m}") for m, v in alone.items()}
    summaries["vanilla"] = [{"seed": s, "test_acc_fusion": fused[s],
                             **{f"test_acc_head_{m}": probe[m][s] for m in probe},
                             **{f"test_acc_part_{m}": part[m][s] for m in part}} for s in range(3)]
    return summaries


def test_a_modality_is_starved_when_its_gap_is_large_and_clear():
    summaries = fake(alone={"a": [0.95, 0.96, 0.94], "b": [0.80, 0.82, 0.81]},
                     probe={"a": [0.93, 0.95, 0.94], "b": [0.60, 0.63, 0.61]},
                     part={"a": [0.95, 0.96, 0.94], "b": [0.40, 0.45, 0.42]})
    result = _read(summaries, ["a", "b"], "acc", full=False)
    assert result["starved"] == ["b"]
    gap = result["modalities"]["b"]["gap"]
    assert gap["mean"] == pytest.approx(0.1967, abs=1e-3) and gap["low"] > 0
    assert result["modalities"]["b"]["inside"]["per_seed"] == [0.60, 0.63, 0.61]  # the probe beats the part
    assert result["verdict"].startswith("b is starved in fusion: read inside fusion 61.3 ± 1.5")


def test_no_modality_is_starved_when_gaps_are_small_or_unclear():
    small = fake(alone={"a": [0.95, 0.96, 0.94], "b": [0.80, 0.82, 0.81]},
                 probe={"a": [0.94, 0.95, 0.93], "b": [0.79, 0.80, 0.79]},  # 1–2 points: below the threshold
                 part={"a": [0.90, 0.90, 0.90], "b": [0.50, 0.50, 0.50]})
    noisy = fake(alone={"a": [0.95, 0.96, 0.94], "b": [0.80, 0.70, 0.90]},
                 probe={"a": [0.95, 0.96, 0.94], "b": [0.60, 0.85, 0.80]},  # mean gap 5 points, interval spans 0
                 part={"a": [0.90, 0.90, 0.90], "b": [0.50, 0.50, 0.50]})
    for summaries in (small, noisy):
        result = _read(summaries, ["a", "b"], "acc", full=False)
        assert result["starved"] == [] and result["verdict"].startswith("No modality is starved here")
    gap = _read(noisy, ["a", "b"], "acc", full=False)["modalities"]["b"]["gap"]
    assert 100 * gap["mean"] >= STARVED_POINTS and gap["low"] < 0


def test_equal_differences_on_every_seed_get_an_interval_of_one_test_sample_and_a_note():
    # Chapter 8's halves, 269 test samples: the left half alone 251, 243, 249 correct; inside vanilla fusion
    # (the better of probe and part) 253, 245, 251 — two different runs per seed, 2 samples apart on each.
    n = 269
    summaries = fake(alone={"left": [251 / n, 243 / n, 249 / n], "right": [63 / n, 55 / n, 62 / n]},
                     probe={"left": [253 / n, 245 / n, 251 / n], "right": [51 / n, 46 / n, 45 / n]},
                     part={"left": [252 / n, 244 / n, 251 / n], "right": [31 / n, 39 / n, 39 / n]},
                     fused=(252 / n, 248 / n, 254 / n))
    summaries["miles-lab"] = [{**r, "test_acc_head_left": r["test_acc_head_left"] + k / n,
                               "test_acc_head_right": r["test_acc_head_right"] + 2 * k / n}
                              for k, r in enumerate(summaries["vanilla"])]
    summaries["miles"] = [{**r, "test_acc_fusion": r["test_acc_fusion"] + 1 / n} for r in summaries["vanilla"]]
    result = _read(summaries, ["left", "right"], "acc", full=True, test_size=n)
    gap = result["modalities"]["left"]["gap"]
    assert gap["per_seed"] == pytest.approx([-2 / n] * 3) and gap["std"] == 0
    # Not the zero-width t-interval -0.7 to -0.7: at least one test sample either side.
    assert (gap["low"], gap["high"]) == pytest.approx((-3 / n, -1 / n)) and gap["floored"]
    assert not result["modalities"]["right"]["gap"]["floored"]  # a real spread keeps its t-interval
    # One more sample for miles on every seed is no gain the seeds can show (it was, at zero width).
    assert result["fused_gain"]["low"] == pytest.approx(0)
    assert result["verdict"].endswith("not distinguishable from zero.")
    d = {**result, "dataset": "halves", "seeds": 3, "full": True, "fusion": "concat", "metric": "acc", "test_size": n,
         "rule": _rule_text(), "made_under": "", "utilization": {"left": [0.8, 0.9], "right": [0.0, 0.0]}}
    page = _markdown(d)
    assert "| left | 92.1 ± 1.5 | 92.6 ± 1.6 | 92.8 ± 1.5 | 92.8 ± 1.5 | -0.7 (95 % CI -1.1 to -0.4) | no |" in page
    assert "-0.7 to -0.7" not in page
    assert ("**The same difference on every seed.** left's gap (alone − inside): -0.7 points on each of the 3 seeds "
            "(-2 of the 269 test samples); the fused model (miles − vanilla): +0.4 points on each of the 3 seeds "
            "(+1 of the 269 test samples). The two sides of each are different runs") in page
    assert "± one test sample (0.37 points)" in page and "right's gap" not in page


def test_diagnose_writes_its_report_and_agrees_with_compare(tmp_path, capsys):
    out = tmp_path / "diagnose"
    args = [*TOY, "--data-option", "strength_b", "0.15", "--epochs", "3", "--seeds", "2"]
    code = cli.main(["diagnose", *args, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and all((out / name).exists() for name in ("diagnosis.md", "diagnosis.json", "diagnosis.png"))
    diagnosis = json.loads((out / "diagnosis.json").read_text())
    assert diagnosis["verdict"] in printed and "**The rule.**" in (out / "diagnosis.md").read_text()
    # compare over the same folder reuses the same runs: its table has the diagnosis's numbers.
    assert cli.main(["compare", *args, "--methods", "vanilla", "--out", str(out)]) == 0
    with open(out / "results.csv") as f:
        rows = {(r["epoch_choice"], r["method"]): r for r in csv.DictReader(f)}
    for m in ("a", "b"):
        entry = diagnosis["modalities"][m]
        assert float(rows["selected", f"unimodal-{m}"][f"{m}_mean"]) == pytest.approx(entry["alone"]["mean"])
        assert float(rows["selected", "vanilla"][f"{m}_mean"]) == pytest.approx(entry["in_fusion"]["mean"])
        assert float(rows["selected", "vanilla"][f"probe_{m}_mean"]) == pytest.approx(entry["probe"]["mean"])
        test_size = json.loads((out / "report.json").read_text())["test_size"]
        assert entry["gap"]["resolution"] == pytest.approx(1 / test_size)  # intervals ≥ one test sample wide
    assert "retraining" not in capsys.readouterr().err  # nothing was trained again


def test_diagnose_needs_two_seeds(tmp_path, capsys):
    code = cli.main(["diagnose", *TOY, "--seeds", "1", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "--seeds must be ≥ 2" in err and len(err.strip().splitlines()) == 1


def test_the_report_shows_no_path_of_this_machine_and_keeps_class_names_literal():
    import importlib
    diagnose_module = importlib.import_module("milesbook.diagnose")
    assert diagnose_module._data_name("/home/someone/runs/08-halves-noise1.0") == "08-halves-noise1.0"
    assert diagnose_module._data_name("digits-av") == "digits-av"
    said = diagnose_module._literal('encoders (most {"class": "__main__.Net"}) *x*')
    assert said == 'encoders (most {"class": "\\_\\_main\\_\\_.Net"}) \\*x\\*'
