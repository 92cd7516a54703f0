"""The tutorial notebooks: committed clean, parameters as documented, and each one executed headlessly
through papermill in its quick setting (the same code path as `milesbook notebooks`), with assertions
on the numbers each records at its end."""
import json

import papermill
import pytest

from milesbook import notebooks
from milesbook.notebooks import NOTEBOOKS, read_record

from .conftest import run_cli

COMMON = {"QUICK", "DEVICE", "OUT_DIR"}
PARAMETERS = {
    "01_modality_competition": COMMON | {"DATASET", "EPOCHS", "SEEDS", "STRENGTH_A", "STRENGTH_B"},
    "02_utilization_rates": COMMON | {"DATASET", "EPOCHS"},
    "03_miles": COMMON | {"DATASET", "EPOCHS", "TAUS", "MUS", "DEFAULT_TAU", "DEFAULT_MU", "WIDGETS"},
    "04_full_protocol": COMMON | {"DATASETS", "METHODS", "FUSIONS", "EPOCHS", "SEEDS"},
    "05_ablations": COMMON | {"DATASET", "DATA_OPTIONS", "EPOCHS", "SEEDS", "TAUS", "MUS", "TAU", "MU"},
    "06_fair_comparison": COMMON | {"DATASET", "SEARCH_DIR", "METHODS", "TRIALS", "EPOCHS", "SEEDS", "WORKERS"},
    "07_many_modalities": COMMON | {"DATASET", "VIEWS", "EPOCHS", "SEEDS", "TAU", "MU"},
    "08_your_own_data": COMMON | {"EPOCHS", "SEEDS", "RIGHT_NOISE"},
    "09_claims": {"QUICK", "OUT_DIR", "REPORTS"},  # trains nothing: reads the committed tuned reports
}


def _probability(x):
    return 0.0 <= x <= 1.0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_and_with_one_parameters_cell(name):
    """Install cell (from the declared repository; removed from the page), imports, then parameters."""
    from milesbook.book import install_cell, repository_url
    path = notebooks.find(name)
    assert not notebooks.has_outputs(path), f"{path.name} is committed with outputs: run milesbook.notebooks.strip"
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "".join(code[0]["source"]) == install_cell(repository_url())
    assert code[0]["metadata"]["tags"] == ["remove-cell"]
    assert "import milesbook as mb" in "".join(code[1]["source"])
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[2]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameter_names(name):
    assert set(papermill.inspect_notebook(str(notebooks.find(name)))) == PARAMETERS[name]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """All notebooks in order, quick setting, sharing one work folder as a user's run would."""
    out = tmp_path_factory.mktemp("notebooks")
    paths = notebooks.run(NOTEBOOKS, quick=True, out=out)
    assert [p.name for p in paths] == [f"{n}.ipynb" for n in NOTEBOOKS]
    return out / "work"


def test_01_modality_competition(executed):
    record = read_record(executed, "01")
    real, toy = record["digits_av"], record["toy"]
    assert real["weak"] == "audio" and toy["weak"] == "b"
    assert all(_probability(v) for v in (real["unimodal"], real["vanilla"], real["probe"], toy["unimodal"], toy["vanilla"]))
    # the claim of the notebook: inside the vanilla model the weak side is below its unimodal model
    assert real["vanilla"] < real["unimodal"] and toy["vanilla"] < toy["unimodal"]


def test_02_utilization_rates(executed):
    record = read_record(executed, "02")
    assert record["largest_difference"] < 1e-6  # by-hand Eq. 4/5 equal the logged columns
    assert record["u_image_mean"]["vanilla"] > record["u_audio_mean"]["vanilla"]  # image dominates
    assert record["delta_last"]["aux"] < record["delta_last"]["vanilla"]  # auxiliary losses shrink δ
    cells = record["factorial"]  # the 2 × 2 and the unimodal reference, audio side
    assert set(cells) == {"unimodal-audio", "vanilla", "miles-lab", "aux", "miles"}
    assert all(_probability(v) for v in cells.values())
    assert cells["aux"] > cells["vanilla"]  # the auxiliary losses lift the weak reading
    assert set(record["probe"]) == {"vanilla", "miles-lab"} and all(_probability(v) for v in record["probe"].values())
    # the sentence about aux is computed from this run: it says "rises"/"shrinks" exactly when the numbers do
    sentence = next(t for t in _markdown_outputs(executed.parent / "02_utilization_rates.ipynb") if "u_audio averages" in t)
    change = record["u_audio_mean"]["aux"] - record["u_audio_mean"]["vanilla"]
    assert ("u_audio **rises**" in sentence) == (change > 0.01)
    assert ("u_audio **falls**" in sentence) == (change < -0.01)
    assert ("u_audio **stays about the same**" in sentence) == (abs(change) <= 0.01)
    assert ("it **shrinks**" in sentence) == (record["delta_last"]["aux"] < record["delta_last"]["vanilla"])
    assert f"{record['u_audio_mean']['aux']:+.3f}" in sentence and f"{record['u_audio_mean']['vanilla']:+.3f}" in sentence


def test_03_miles_grid_and_slider_settings(executed):
    record = read_record(executed, "03")
    taus = (0.0, 0.5, 0.6)
    assert record["settings"] == [[t, m] for t in taus for m in (0.5, 1.0)]
    slowed = record["slowed_epochs"]
    assert all(slowed[f"{t},1.0"] == 0 for t in taus)  # μ = 1: MILES off, whatever τ
    # every τ of the quick slider changes the run: fewer slowed epochs with each larger τ
    at_half = [slowed[f"{t},0.5"] for t in taus]
    assert at_half[0] > at_half[1] > at_half[2] >= 1, at_half
    assert record["distinct_runs"] == 4  # three τ at μ = 0.5, and one run for all of μ = 1
    assert record["same_run_same_numbers"] is True  # the three μ = 1 settings report one run's numbers
    default = record["default"]
    assert (default["tau"], default["mu"]) == (0.5, 0.5)
    assert all(_probability(default[k]) for k in ("audio", "image", "fusion"))


def test_04_every_method_both_fusions(executed):
    record = read_record(executed, "04")
    assert record["device"] == "cpu"
    tables = record["datasets"]["digits-av"]
    assert set(tables) == {"concat", "sum"}
    expected = {"unimodal-image", "unimodal-audio", "vanilla", "miles-lab", "aux", "miles", "mses", "mslr-k",
                "mslr-s", "mslr-d", "ogm", "ogm-ge", "gblend", "mmpareto", "pmr", "mla", "inforeg", "aim-r",
                "arl", "remix", "dgl", "aug"}
    for rows in tables.values():
        assert set(rows) == expected
        assert all(_probability(v) for row in rows.values() for v in row.values() if v is not None)


def test_05_ablation_sweeps(executed):
    record = read_record(executed, "05")
    assert record["data_options"] == {"image_noise": 1.0, "train_noise": "baked"}  # the non-saturated setting
    assert set(record["setting"]) == {"unimodal-image", "unimodal-audio", "vanilla", "miles-lab", "aux", "miles"}
    assert all(_probability(v) for row in record["setting"].values() for v in row.values())
    assert list(record["tau"]) == ["0.0", "0.5", "0.6"] and list(record["mu"]) == ["0.25", "1.0"]
    assert list(record["utilization_split"]) == ["val", "train"]
    # the fused 2 × 2, paired by seed: with the one quick seed each effect is the difference of the rows
    effects, setting = record["fused_effects"], record["setting"]
    assert set(effects) == {"miles-lab − vanilla", "miles − aux", "aux − vanilla", "miles − miles-lab", "miles − vanilla"}
    for name, effect in effects.items():
        treated, control = name.split(" − ")
        assert effect["n"] == record["seeds"] == 1 and effect["low"] is None
        assert effect["mean"] == pytest.approx(setting[treated]["fusion"] - setting[control]["fusion"])
    for sweep in ("tau", "mu", "utilization_split"):
        assert all(_probability(v) for row in record[sweep].values() for v in row.values())


def test_06_fair_comparison(executed):
    record = read_record(executed, "06")
    assert record["searched_here"] and record["trials"] == {"aux-concat": 3, "miles-concat": 3, "vanilla-concat": 3}
    assert record["seeds"] == [1, 2]  # the searches trained with seed 0
    assert set(record["tuned_mean"]) == {"vanilla", "aux", "miles"}
    assert all(_probability(v) for v in [*record["tuned_mean"].values(), *record["best_trial_test"].values()])
    # The best trial retrained with the search's seed is the search's own run: same validation value.
    assert record["best_trial_val"] == pytest.approx(record["search_val"], abs=1e-12)
    summaries = {m: [json.loads((executed / "06-digits-av-search-2ep" / "compare" / f"{m}-concat" / f"seed{s}" /
                                 "summary.json").read_text()) for s in (1, 2)] for m in ("aux", "miles")}
    weak = record["weak"]
    for method in ("aux", "miles"):  # the best-of-N figure's weak-modality numbers, from the runs themselves
        chosen = json.loads((executed / "06-digits-av-search-2ep" / "compare" / f"{method}-concat" / "search-seed0" /
                             "summary.json").read_text())
        assert record["best_trial_weak"][method] == chosen[f"test_acc_{weak}"]
        assert record["tuned_mean_weak"][method] == pytest.approx(
            sum(s[f"test_acc_{weak}"] for s in summaries[method]) / 2)
    expected = sum(m[f"test_acc_{weak}"] - a[f"test_acc_{weak}"] for m, a in zip(summaries["miles"], summaries["aux"])) / 2
    assert record["miles_minus_aux"][f"test_acc_{weak}"] == pytest.approx(expected)


def test_07_many_modalities(executed):
    """Runs on the real mfeat views, which `make test` prepares (tests/conftest.py shares them)."""
    record = read_record(executed, "07")
    views = ["pixel", "fourier", "morphology"]
    assert record["dataset"] == "mfeat" and record["views"] == views and record["epochs"] == 4
    assert record["largest_difference"] < 1e-12  # u_m recomputed from M_{−m} equals the log
    assert all(_probability(record["unimodal"][m]) for m in views)
    assert record["unimodal"]["pixel"] > record["unimodal"]["morphology"]  # the strong and the weak view
    for method in ("vanilla", "aux", "miles"):
        assert all(_probability(record["methods"][method][k]) for k in ["fusion", *views, "delta"])
        row = record["methods"][method]
        assert row["delta"] == pytest.approx(max(row[m] for m in views) - min(row[m] for m in views))
    assert set(record["pair_actions"]) == {"pixel-fourier", "pixel-morphology", "fourier-morphology"}
    assert all(0 <= n <= 4 for n in [*record["slowed_epochs"].values(), *record["pair_actions"].values()])
    # a modality is slowed in an epoch exactly when some pair's block slowed it the epoch before
    assert sum(record["slowed_epochs"].values()) <= sum(record["pair_actions"].values())


def test_08_your_own_data(executed):
    """Plain arrays saved with numpy, an encoder of the notebook's own, and the diagnosis read back."""
    from milesbook.diagnose import read
    record = read_record(executed, "08")
    assert record["data_origin"].startswith("folder ") and record["encoder_class"].endswith("HalfDigitNet")
    assert set(record["alone"]) == {"left", "right"} and record["weak"] == "right"
    assert all(_probability(v) for v in [*record["alone"].values(), *record["inside"].values(), *record["fused"].values()])
    diagnosis = read(executed / "08-diagnose-4ep-2seeds")
    assert record["verdict"] == diagnosis["verdict"] and record["starved"] == diagnosis["starved"]
    for m, gap in record["gap"].items():  # the gap is alone − inside, as the report's rule reads it
        assert gap == pytest.approx(record["alone"][m] - record["inside"][m])
        assert (m in record["starved"]) == diagnosis["modalities"][m]["starved"]
    contrast = read(executed / "08-diagnose-digits-av-4ep-2seeds")  # digits-av for contrast: the same rule
    assert record["contrast"]["verdict"] == contrast["verdict"] and set(record["contrast"]["gap"]) == {"image", "audio"}


def test_09_claims_reads_both_committed_tuned_reports(executed):
    """The closing chapter's claims, recomputed here from the committed reports' per-seed values."""
    record = read_record(executed, "09")
    root = notebooks.notebooks_dir()
    assert [str((root / r).resolve()) for r in record["reports"]] == \
        [str(root.parent / "docs" / d / "compare") for d in ("tuned", "tuned-harder")]
    assert list(record["settings"]) == ["default", "image_noise 1.0, train_noise baked"]
    for folder, (name, found) in zip(record["reports"], record["settings"].items()):
        methods = json.loads((root / folder / "report.json").read_text())["fusion_results"]["concat"]["methods"]
        by_seed = {m: dict(zip(methods[m]["seeds"], methods[m]["values"]["fusion"])) for m in ("miles", "vanilla")}
        paired = [by_seed["miles"][s] - by_seed["vanilla"][s] for s in by_seed["miles"]]
        claim = found["claims"]["miles − vanilla, fused"]
        assert claim["mean"] == pytest.approx(sum(paired) / len(paired)) and claim["low"] <= claim["mean"] <= claim["high"]
        assert claim["verdict"] == ("supported" if claim["low"] > 0 else "contradicted" if claim["high"] < 0
                                    else "not distinguishable from zero")
        assert len(found["claims"]) == 9 and found["inflation"]["n"] >= 16
    # the harder setting leaves the fused accuracy room; the default one does not
    assert record["settings"]["image_noise 1.0, train_noise baked"]["vanilla_fusion_mean"] < 0.97
    assert record["settings"]["default"]["vanilla_fusion_mean"] > 0.99


def test_the_quick_book_builds_from_the_executed_notebooks(executed, tmp_path):
    """CI builds the book in the quick setting, and checks what a reader depends on: every chapter's
    page with figures, formulas rendered (no raw TeX), one answer toggle per exercise, and no
    scaffolding (parameters, the install cell, records' dict dumps) and no path of this machine."""
    import html
    import re
    from milesbook import book
    index = book.render(executed.parent, tmp_path / "book")
    text = index.read_text()
    assert book.QUICK in html.unescape(text)
    root = str(notebooks.notebooks_dir().parent.resolve())
    for name in NOTEBOOKS:
        assert f'href="{name}.html"' in text
        page = (tmp_path / "book" / f"{name}.html").read_text()
        main = page[page.index("<main"):page.index("</main>")]
        assert re.search(r'<img [^>]*src="_images/', main), f"{name} shows no figure"
        exercises = _exercise_count(name)
        assert main.count('admonition-title">Answer ') == exercises >= 2, name
        visible = html.unescape(re.sub(r"<(style|script)\b.*?</\1>|<[^>]+>", " ", main, flags=re.S))
        assert "What you saw" in visible and "Exercises" in visible and "Settings on this page" in visible
        assert "$$" not in visible and "\\(" not in visible and not re.search(r"\$\\?[a-zA-Z]+_", visible), name
        assert "QUICK = " not in main and "injected-parameters" not in main and "ImportError" not in main
        assert "mb.notebooks.record(" not in main and not re.search(r"<pre>\{&#x27;", main), name
        assert root not in page and str(executed) not in page, name
    assert "<math" in (tmp_path / "book" / "03_miles.html").read_text()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_says_what_it_teaches_what_was_seen_and_asks(name):
    """Opens with a "You will learn" list (the book's index shows it), says "What you saw" in prose (a
    Markdown display whose code the page hides), and ends with 2–4 exercises whose answers are behind
    a toggle."""
    import re

    import nbformat
    from milesbook import book
    notebook = nbformat.read(notebooks.find(name), as_version=4)
    assert len(book._learn_bullets(notebook)) >= 2
    cells = notebook.cells
    saw = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## What you saw"))
    assert "display(Markdown(" in cells[saw + 1].source and "remove-input" in cells[saw + 1].metadata["tags"]
    exercises = cells[-1]
    assert exercises.cell_type == "markdown" and exercises.source.startswith("## Exercises")
    asked = re.findall(r"^\d+\. \*\*", exercises.source.split("<details>")[0], re.M)
    assert 2 <= len(asked) <= 4
    assert "<summary>Answer</summary>" in exercises.source
    assert book.without_answers(exercises.source).count("<details>") == 0
    paired = book.per_exercise_answers(exercises.source)  # one numbered answer per question, or it raises
    assert paired.count("{admonition} Answer ") == len(asked) == _exercise_count(name)


def _exercise_count(name) -> int:
    """How many exercises notebook `name` asks: numbered items of its last cell, before the answers."""
    import re
    exercises = json.loads(notebooks.find(name).read_text())["cells"][-1]
    source = "".join(exercises["source"]) if isinstance(exercises["source"], list) else exercises["source"]
    return len(re.findall(r"^\d+\. ", source.split("<details>")[0], re.M))


def _markdown_outputs(path) -> list[str]:
    notebook = json.loads(path.read_text())
    return ["".join(o["data"]["text/markdown"]) for c in notebook["cells"] for o in c.get("outputs", [])
            if "text/markdown" in o.get("data", {})]


def test_failing_cell_names_its_error(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="unknown dataset 'nope'"):
        notebooks.run(["02"], quick=True, out=tmp_path, parameters={"DATASET": "nope"})


def test_cli_runs_notebooks_and_says_where(tmp_path):
    result = run_cli("notebooks", "--quick", "--only", "02", "--out", tmp_path, "-p", "DEVICE", "cpu", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"executed: {tmp_path / '02_utilization_rates.ipynb'}" in result.stdout
    assert read_record(tmp_path / "work", "02")["largest_difference"] < 1e-6


def test_a_notebook_prepares_the_dataset_it_reads(monkeypatch, cache, capsys):
    """`milesbook notebooks` after `make demo` (nothing prepared): notebook 07 prepares mfeat first,
    as `make test` does; a prepared dataset is left alone."""
    from milesbook.datasets import mfeat
    calls = []
    monkeypatch.setattr(mfeat, "prepare", lambda folder=None, **k: calls.append(folder))
    notebooks.prepare_needed("07_many_modalities")
    assert calls == [None] and "reads mfeat, which is not prepared yet" in capsys.readouterr().out
    notebooks.prepare_needed("02_utilization_rates")
    assert calls == [None]  # notebook 02 reads only the embedded dataset
    monkeypatch.setattr(mfeat, "is_prepared", lambda folder=None: True)
    from milesbook.datasets import REGISTRY
    monkeypatch.setattr(REGISTRY["mfeat"], "prepared", lambda: True)
    notebooks.prepare_needed("07_many_modalities")
    assert calls == [None]


def _answers(name) -> str:
    exercises = json.loads(notebooks.find(name).read_text())["cells"][-1]
    source = "".join(exercises["source"]) if isinstance(exercises["source"], list) else exercises["source"]
    return source[source.index("<details>"):]


def test_answers_that_state_a_direction_agree_with_the_full_setting_records():
    """An answer is hand-written; where it states a number's direction, the committed full-setting
    records (docs/book/records, what the pages show) must say the same."""
    records = notebooks.notebooks_dir().parent / "docs" / "book" / "records"
    read = lambda number: json.loads((records / f"record-{number}.json").read_text())  # noqa: E731
    two = read("02")
    assert "The audio reading rises sharply" in _answers("02_utilization_rates")
    assert two["factorial"]["aux"] - two["factorial"]["vanilla"] > 0.2
    assert "$u_{audio}$ barely moves" in _answers("02_utilization_rates")
    assert abs(two["u_audio_mean"]["aux"] - two["u_audio_mean"]["vanilla"]) < 0.01
    four = read("04")["datasets"]["digits-av"]
    assert _answers("04_full_protocol").startswith("<details>\n<summary>Answer</summary>\n\n1. It depends on the dataset; "
                                                   "on `digits-av` the methods that train the unimodal heads")
    unimodal = four["concat"]["unimodal-audio"]["audio_mean"]
    for method in ("aux", "miles", "mslr-k", "mslr-s", "mslr-d", "mses"):  # "read audio near its unimodal model"
        assert abs(four["concat"][method]["audio_mean"] - unimodal) < 0.06, method
    for method in ("vanilla", "miles-lab"):  # "far lower"
        assert four["concat"][method]["audio_mean"] < unimodal - 0.2, method
    assert "2. Higher, on `digits-av`" in _answers("04_full_protocol") and "still far below" in _answers("04_full_protocol")
    assert four["sum"]["vanilla"]["audio_mean"] > four["concat"]["vanilla"]["audio_mean"]
    assert four["sum"]["vanilla"]["audio_mean"] < unimodal - 0.1
    nine = read("09")["settings"]
    assert "claim 3 reads the fused\n   accuracy, which cannot rise above 100 %" in _answers("09_claims")
    assert nine["default"]["vanilla_fusion_mean"] > 0.99 and nine["default"]["claims"]["miles − vanilla, fused"][
        "verdict"] != "supported"


def test_answers_worked_by_hand_agree_with_the_package():
    """The by-hand answers (Eq. 4, Algorithm 1, its N-modality form) are what milesbook itself computes,
    and chapter 3's "μ = 1 is `aux`" is what its full-setting grid recorded (no epoch slowed)."""
    import re

    from milesbook.miles import conditional_utilization, decide, decide_many, utilization_without
    u_a, u_b = conditional_utilization(0.90, 0.88, 0.50)
    answer = _answers("02_utilization_rates")
    assert f"$u_A = (0.90 - 0.50)/0.90 = {u_a:.3f}$, $u_B = (0.90 - 0.88)/0.90 = {u_b:.3f}$, δ = {u_a - u_b:.3f}: " \
           "A dominates" in answer
    answer = _answers("03_miles")
    said = [tuple(float(x) for x in pair) for pair in re.findall(r"→ \(([\d.]+), ([\d.]+)\)", answer)]
    cases = [(0.35, 0.10), (0.30, -0.05), (-0.1, -0.2), (0.15, 0.05)]
    assert said == [decide(a, b, tau=0.2, mu=0.5) for a, b in cases]
    slowed = json.loads((notebooks.notebooks_dir().parent / "docs" / "book" / "records" / "record-03.json")
                        .read_text())["slowed_epochs"]
    assert "2. μ = 1, whatever τ" in answer and all(n == 0 for key, n in slowed.items() if key.endswith(",1.0"))
    assert all(n > 0 for key, n in slowed.items() if not key.endswith(",1.0"))
    u = utilization_without(0.95, {"pixel": 0.80, "fourier": 0.93, "morphology": 0.95})
    answer = _answers("07_many_modalities")
    assert (f"$u_{{pixel}} = 0.15/0.95 = {u['pixel']:.3f}$, $u_{{fourier}} = 0.02/0.95 = {u['fourier']:.3f}$, "
            "$u_{morphology} = 0$") in answer
    assert decide_many(u, tau=0.1, mu=0.5) == {"pixel": 0.5, "fourier": 1.0, "morphology": 1.0}
    assert "So pixel is slowed (once, at μ·α)" in answer
    assert f"be $0.5^5 α ≈ {0.5 ** 5:.2f} α$" in _answers("03_miles")
    assert f"μ ≈ 1e-3 / 4e-3 = {1e-3 / 4e-3:.2f}" in _answers("05_ablations")
    from milesbook.diagnose import STARVED_POINTS
    assert f"it may fall below the rule's {STARVED_POINTS:.0f} points" in _answers("08_your_own_data")
