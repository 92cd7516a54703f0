"""The paper's claims page (`milesbook claims`) and the paper's reading beside ours: each verdict and
difference from a report whose values are set by hand."""
import json
from pathlib import Path

import pytest

from milesbook import runs
from milesbook.claims import (against_others, claim_rows, effect, inflation, load_setting, verdict, verdict_table,
                             write_claims)
from milesbook.errors import UserError
from milesbook.errors import UserError
from milesbook.tuned import selection_inflation

from .conftest import run_cli

SEEDS = [1, 2, 3]
ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = json.loads((ROOT / "docs" / "tuned" / "compare" / "report.json").read_text())["provenance"]


def _report(tmp_path, values: dict, name="compare", options=None) -> str:
    """A tuned comparison folder holding `values` {method: {column: [per seed]}} and a search beside it."""
    search = tmp_path / name
    (search / "vanilla-concat").mkdir(parents=True)
    best = json.loads((ROOT / "docs" / "tuned" / "vanilla-concat" / "best.json").read_text())
    best["config"]["dataset_options"] = options or {}
    (search / "vanilla-concat" / "best.json").write_text(json.dumps(best))
    folder = search / "compare"
    folder.mkdir()
    record = {"kind": "tuned", "search_dir": "..", "seeds": len(SEEDS), "test_size": 100,
              "made_under": "Made under: test", "provenance": PROVENANCE,
              "fusion_results": {"concat": {"weak": "audio", "metric": "acc", "effects": {},
                                            "methods": {m: {"seeds": SEEDS, "values": v} for m, v in values.items()}}}}
    (folder / "report.json").write_text(json.dumps(record))
    return str(folder)


BASE = {"unimodal-audio": {"audio": [0.90, 0.91, 0.89]},
        "vanilla": {"fusion": [0.88, 0.89, 0.895], "audio": [0.40, 0.42, 0.38], "probe_audio": [0.60, 0.62, 0.58],
                    "delta": [0.59, 0.57, 0.61], "oracle_fusion": [0.93, 0.93, 0.94]},
        "aux": {"fusion": [0.91, 0.92, 0.93], "audio": [0.85, 0.86, 0.87], "delta": [0.14, 0.13, 0.12],
                "oracle_fusion": [0.92, 0.93, 0.94]},
        "miles": {"fusion": [0.91, 0.92, 0.93], "audio": [0.86, 0.84, 0.88], "delta": [0.13, 0.15, 0.11],
                  "oracle_fusion": [0.94, 0.95, 0.95]},
        "ogm": {"fusion": [0.95, 0.96, 0.97], "audio": [0.40, 0.41, 0.42], "delta": [0.5, 0.5, 0.5],
                "oracle_fusion": [0.95, 0.96, 0.97]}}


def test_verdicts_follow_the_interval_and_the_claimed_direction():
    assert verdict({"mean": 0.1, "low": 0.05, "high": 0.15}, +1) == "supported"
    assert verdict({"mean": 0.1, "low": 0.05, "high": 0.15}, -1) == "contradicted"
    assert verdict({"mean": 0.0, "low": -0.05, "high": 0.05}, +1) == "not distinguishable from zero"
    assert verdict({"mean": -0.1, "low": -0.15, "high": -0.05}, -1) == "supported"
    assert verdict(None, +1) == "not measured"


def test_each_claim_is_a_paired_effect_by_hand(tmp_path):
    setting = load_setting(_report(tmp_path, BASE))
    rows = {row["effect"]: row for row in claim_rows(setting)}
    starve = rows["vanilla − unimodal-audio, audio"]
    assert starve["difference"]["mean"] == pytest.approx(-0.50)  # (0.40 − 0.90, 0.42 − 0.91, 0.38 − 0.89)
    assert starve["verdict"] == "supported"
    probe = rows["vanilla − unimodal-audio, audio encoder (probe)"]
    assert probe["difference"]["mean"] == pytest.approx(-0.30)
    scheduling = rows["miles − aux, audio"]
    assert scheduling["difference"]["per_seed"] == pytest.approx([0.01, -0.02, 0.01])
    assert scheduling["verdict"] == "not distinguishable from zero"
    fused = rows["miles − aux, fused"]  # the same on every seed: the interval is ± one test sample, not 0
    assert (fused["difference"]["low"], fused["difference"]["high"]) == pytest.approx((-0.01, 0.01))
    assert rows["miles − vanilla, fused"]["verdict"] == "supported"
    assert rows["miles − vanilla, Δ"]["verdict"] == "supported"  # Δ narrows: a negative difference
    assert effect(setting, "miles", "ogm", "fusion")["mean"] == pytest.approx(-0.04)


def test_inflation_is_the_best_test_value_minus_ours_paired_by_run(tmp_path):
    setting = load_setting(_report(tmp_path, BASE))
    per, overall = inflation(setting)
    assert per["vanilla"]["mean"] == pytest.approx((0.05 + 0.04 + 0.045) / 3)
    assert per["ogm"]["mean"] == pytest.approx(0.0)
    assert overall["mean"] == pytest.approx(sum(d["mean"] for d in per.values()) / 4)
    assert overall["n"] == 4


def test_claims_page_names_both_settings_and_the_command(tmp_path):
    default = _report(tmp_path / "a", BASE)
    harder = _report(tmp_path / "b", BASE, options={"image_noise": 1.0, "train_noise": "baked"})
    page = write_claims([default, harder], tmp_path / "claims.md").read_text()
    assert "## default setting" in page and "## image_noise 1.0, train_noise baked setting" in page
    assert f"milesbook claims {default} {harder} --out docs/claims.md" in page
    assert "| 2 · … of which the scheduling | miles − aux, audio | +0.0 (95 % CI" in page
    assert "MILES against every other method on the fused accuracy (paired by seed): better than vanilla" in page
    assert "worse than ogm" in page
    # the paper's reading beside ours: means over seeds, and the paired inflation (+5, +4, +4.5 points)
    assert "| vanilla | 88.8 | 93.3 | +4.5 (95 % CI +3.3 to +5.7) |" in page
    assert "| ogm | 96.0 | 96.0 | +0.0 (95 % CI -1.0 to +1.0) |" in page
    assert "Over the methods (each one unit) the paper's reading adds **+" in page
    assert (tmp_path / "claims-forest.png").stat().st_size > 10_000


def test_claims_refuses_a_folder_without_a_tuned_report(tmp_path):
    done = run_cli("claims", tmp_path, "--out", tmp_path / "claims.md")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("milesbook: error:")


def test_best_on_test_reads_the_first_epoch_with_the_best_test_fusion(tmp_path):
    (tmp_path / "test_history.csv").write_text("epoch,test_loss_fusion,test_acc_fusion,test_acc_audio\n"
                                               "1,1.0,0.80,0.5\n2,0.9,0.90,0.4\n3,0.8,0.90,0.6\n4,0.7,0.85,0.7\n")
    assert runs.best_on_test(tmp_path, "acc") == {"oracle_epoch": 2, "oracle_test_loss_fusion": 0.9,
                                                 "oracle_test_acc_fusion": 0.90, "oracle_test_acc_audio": 0.4}
    assert runs.best_on_test(tmp_path / "none", "acc") == {}


def test_selection_inflation_table_by_hand():
    by_method = {"unimodal-audio": [{"seed": 1, "test_acc_audio": 0.9, "oracle_test_acc_audio": 0.95}],
                 "vanilla": [{"seed": s, "method": "vanilla", "test_acc_fusion": f, "oracle_test_acc_fusion": o,
                              "test_acc_audio": a, "oracle_test_acc_audio": oa}
                             for s, f, o, a, oa in ((1, 0.90, 0.92, 0.40, 0.39), (2, 0.91, 0.94, 0.42, 0.45))]}
    found, table = selection_inflation(by_method, "audio", "acc")
    assert set(found) == {"vanilla", "all"}  # unimodal references have no fused reading to inflate
    assert found["vanilla"]["fusion"]["mean"] == pytest.approx(0.025)
    assert found["vanilla"]["audio"]["mean"] == pytest.approx(0.01)
    assert "| vanilla | 90.5 | 93.0 | +2.5 (95 % CI" in table


def test_when_the_modalities_tie_alone_the_claims_read_the_one_fusion_starves(tmp_path):
    """The paper's weak modality is the one weaker alone; when the unimodal models cannot be told
    apart, the claims read the modality vanilla reads furthest below its unimodal model, and say so."""
    tied = {**BASE, "unimodal-image": {"image": [0.905, 0.895, 0.90]},
            "vanilla": {**BASE["vanilla"], "image": [0.89, 0.90, 0.88]}}
    setting = load_setting(_report(tmp_path / "tied", tied))  # the report names image (alone 0.900 < 0.900…)
    setting.record["fusion_results"]["concat"]["weak"] = "image"
    assert setting.weak == "audio" and "cannot be told apart" in setting.weak_reason
    assert "**audio**" in setting.weak_reason
    rows = {row["effect"]: row for row in claim_rows(setting)}
    assert rows["vanilla − unimodal-audio, audio"]["verdict"] == "supported"
    apart = {**tied, "unimodal-image": {"image": [0.99, 0.98, 0.99]}}  # image clearly stronger alone
    clear = load_setting(_report(tmp_path / "apart", apart))
    clear.record["fusion_results"]["concat"]["weak"] = "audio"
    assert clear.weak == "audio" and clear.weak_reason == ""


def test_reports_missing_a_piece_get_a_sentence_not_a_crash(tmp_path):
    without_miles = {k: v for k, v in BASE.items() if k != "miles"}
    setting = load_setting(_report(tmp_path / "a", without_miles))
    assert against_others(setting) == {"better than": [], "worse than": [], "not distinguishable from": []}
    assert {row["verdict"] for row in claim_rows(setting) if row["effect"].startswith("miles")} == {"not measured"}
    no_references = load_setting(_report(tmp_path / "b", {k: v for k, v in BASE.items() if k != "unimodal-audio"}))
    no_references.record["fusion_results"]["concat"]["weak"] = None
    with pytest.raises(UserError, match="no unimodal references"):
        claim_rows(no_references)


def test_the_verdict_table_names_the_weak_modality_as_a_whole_word(tmp_path):
    renamed = {m.replace("audio", "a"): {k.replace("audio", "a"): v for k, v in values.items()}
               for m, values in BASE.items()}
    setting = load_setting(_report(tmp_path, renamed))
    setting.record["fusion_results"]["concat"]["weak"] = "a"
    table = verdict_table([setting])
    assert "| vanilla − unimodal, weak modality |" in table and "vweak" not in table
