"""`milesbook diagnose`: the verdict follows its stated rule, and it reads the very runs `compare` reads."""
import csv
import json

import pytest

import milesbook.cli as cli
from milesbook.diagnose import STARVED_POINTS, _read

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
    assert "retraining" not in capsys.readouterr().err  # nothing was trained again


def test_diagnose_needs_two_seeds(tmp_path, capsys):
    code = cli.main(["diagnose", *TOY, "--seeds", "1", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "--seeds must be ≥ 2" in err and len(err.strip().splitlines()) == 1
