"""Folders you are handed (`milesbook.handed`): a run, report or search folder someone else wrote —
each case below a copy of a real one with one edit — never deletes, writes outside itself, imports,
connects, hangs or prints a traceback; every bad value is one line, exit 2, nothing lost."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import milesbook as mb
from milesbook import cli
from milesbook.errors import UserError

from .conftest import run_cli

TOY = {"sizes": [90, 45, 45]}  # a second per run: these tests are about the folders, not the numbers


def toy_config(**changes):
    return mb.TrainConfig(**{"dataset": "toy", "dataset_options": TOY, "epochs": 2, **changes})


def main(capsys, *args) -> tuple[int, str, str]:
    """`milesbook ARGS` in this process: (exit status, stdout, stderr). Any exception escaping `main`
    would be a traceback on the command line, and fails the test."""
    capsys.readouterr()
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err: str, *words) -> str:
    """The one error line of a refused command, checked to say `words`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("milesbook: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes: what must not change."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished run (2 epochs, candidates kept while training), a compare report (vanilla, 2 seeds)
    and a search (2 trials): the real folders every test copies and edits."""
    root = tmp_path_factory.mktemp("made")
    data = mb.load_dataset("toy", **TOY)
    mb.train(toy_config(method="vanilla"), root / "run", dataset=data, progress=False)
    mb.compare("toy", ["vanilla"], seeds=2, out=root / "report", base=toy_config(epochs=1), progress=False)
    from milesbook import search
    search.search(toy_config(method="vanilla", epochs=1), root / "search", trials=2, progress=False, data=data)
    return root


@pytest.fixture
def copy(made, tmp_path):
    """copy("run") → a fresh copy of that made folder inside this test's own tmp folder."""
    def make(name: str) -> Path:
        return Path(shutil.copytree(made / name, tmp_path / "handed" / name, symlinks=True))
    return make


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


# -- 1. never delete or write through a link -----------------------------------------------------------

def unfinished(run: Path) -> None:
    """The run as if killed after its last epoch but before its summary: resuming it finishes it, which
    empties candidates/."""
    (run / "summary.json").unlink()
    (run / "candidates").mkdir(exist_ok=True)
    selected = torch.load(run / "selected.pt", weights_only=True)
    torch.save(selected["model"], run / "candidates" / f"epoch{selected['epoch']}.pt")
    (run / "selected.pt").unlink()


def test_resume_never_deletes_through_a_candidates_link(copy, tmp_path, capsys):
    run, mine = copy("run"), tmp_path / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    unfinished(run)
    shutil.rmtree(run / "candidates")
    (run / "candidates").symlink_to(mine)
    status, _, err = main(capsys, "train", "--dataset", "toy", "--data-option", "sizes", "[90, 45, 45]",
                          "--method", "vanilla", "--epochs", "2", "--out", run, "--resume")
    assert status == 2
    one_line(err, "candidates", "symbolic link")
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_compare_on_a_handed_report_never_deletes_through_a_seed_candidates_link(copy, tmp_path, capsys):
    report, mine = copy("report"), tmp_path / "my-files"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2,3")
    seed1 = report / "vanilla-concat" / "seed1"
    config = json.loads((seed1 / "config.json").read_text())
    unfinished(seed1)
    shutil.rmtree(seed1 / "candidates")
    (seed1 / "candidates").symlink_to(mine)
    with pytest.raises(UserError, match="symbolic link"):
        mb.compare("toy", ["vanilla"], seeds=2, out=report, base=mb.TrainConfig.from_dict(
            {**config, "method": "miles", "seed": 0}), progress=False)
    assert (mine / "data.csv").read_text() == "1,2,3"


def test_compare_never_writes_through_a_seed_folder_that_is_a_link(copy, tmp_path, capsys):
    report = copy("report")
    elsewhere = Path(shutil.copytree(report / "vanilla-concat" / "seed1", tmp_path / "elsewhere"))
    (elsewhere / "history.csv").write_text("someone else's table\n")
    shutil.rmtree(report / "vanilla-concat" / "seed1")
    (report / "vanilla-concat" / "seed1").symlink_to(elsewhere)
    before = snapshot(elsewhere)
    status, _, err = main(capsys, "compare", "--dataset", "toy", "--data-option", "sizes", "[90, 45, 45]",
                          "--methods", "vanilla", "--seeds", "2", "--epochs", "1", "--out", report)
    assert status == 2
    one_line(err, "seed1", "symbolic link")
    assert snapshot(elsewhere) == before


def test_search_status_never_repairs_a_journal_through_a_link(copy, tmp_path, capsys):
    search = copy("search")
    outside = tmp_path / "outside.log"
    outside.write_bytes(b"line one\nline two, cut off")
    (search / "search.journal").unlink()
    (search / "search.journal").symlink_to(outside)
    status, _, err = main(capsys, "search", "--status", search)
    assert status == 2
    one_line(err, "search.journal", "symbolic link")
    assert outside.read_bytes() == b"line one\nline two, cut off"


def test_search_status_connects_to_no_storage_a_study_json_names(copy, tmp_path, capsys):
    search = copy("search")
    database = tmp_path / "elsewhere" / "made.db"
    database.parent.mkdir()
    edit_json(search / "study.json", lambda s: s.update(storage=f"sqlite:///{database}"))
    status, _, err = main(capsys, "search", "--status", search)
    assert status == 2
    one_line(err, "--storage", "connects to nothing")
    assert not database.exists()


# -- 2. nothing a file names is imported -----------------------------------------------------------------

EVIL = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('imported')\ndef make(**kw):\n    raise SystemExit(0)\n"


def test_verify_imports_no_encoder_a_handed_config_names(copy, tmp_path):
    run = copy("run")
    (run / "evil.py").write_text(EVIL)
    edit_json(run / "config.json", lambda c: c.update(encoder="a=evil:make"))
    done = run_cli("verify", ".", cwd=run)  # `python -m` puts the folder on sys.path: evil.py importable
    assert done.returncode == 2, done.stdout + done.stderr
    one_line(done.stderr, "--encoder a=evil:make", "imports nothing")
    assert not (run / "RAN").exists()


@pytest.mark.parametrize("spec", ["a=sys:exit", "image=tempfile:mkdtemp", "os:system"])
def test_verify_imports_nothing_from_config_json(copy, capsys, spec):
    run = copy("run")
    edit_json(run / "config.json", lambda c: c.update(encoder=spec))
    status, _, err = main(capsys, "verify", run)
    assert status == 2
    one_line(err, f"--encoder {spec}")


def test_a_report_and_a_search_import_nothing_they_name(copy, capsys):
    report = copy("report")
    edit_json(report / "report.json", lambda r: r["base"].update(encoder="a=sys:exit"))
    status, _, err = main(capsys, "verify", report)
    assert status == 2
    one_line(err, "report.json", "--encoder a=sys:exit")
    search = copy("search")
    edit_json(search / "best.json", lambda r: r["config"].update(encoder="a=sys:exit"))
    status, _, err = main(capsys, "compare", "--from-search", search)
    assert status == 2
    one_line(err, "best.json", "--encoder a=sys:exit")


@pytest.mark.parametrize("spec", ["a=os:system", "a=:", "a=.x:y", "a=os:sep", "a=os.path:join"])
def test_a_bad_encoder_flag_is_one_line(tmp_path, capsys, spec):
    status, _, err = main(capsys, "train", "--dataset", "toy", "--data-option", "sizes", "[90, 45, 45]",
                          "--epochs", "1", "--encoder", spec, "--out", tmp_path / "run")
    assert status == 2
    one_line(err, "--encoder")


def test_encoder_help_says_it_imports_code():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "IMPORTS" in " ".join(text.split())


# -- 3. no hang: counts come from what the folder holds -------------------------------------------------

def test_verify_of_a_config_claiming_a_billion_epochs_is_refused_at_once(copy, capsys):
    run = copy("run")
    for claim, status_wanted, words in ((1e9, 2, ("epochs",)), (10 ** 9, 2, ("epochs",)),
                                        (500, 1, ("500 epochs", "history.csv has 2"))):
        edit_json(run / "config.json", lambda c: c.update(epochs=claim))
        began = time.perf_counter()
        status, out, err = main(capsys, "verify", run)
        assert status == status_wanted and time.perf_counter() - began < 20
        assert all(w in out + err for w in words), out + err


def test_verify_of_a_report_claiming_a_billion_seeds_is_refused(copy, capsys):
    report = copy("report")
    for claim in (1e9, 10 ** 9, 5):
        edit_json(report / "report.json", lambda r: r.update(seeds=claim))
        status, _, err = main(capsys, "verify", report)
        assert status == 2
        one_line(err, "report.json", "seeds")


@pytest.mark.parametrize("sizes", [[10 ** 12, 30, 30], [90, 45, 45, 1], [90.5, 45, 45], [0, 45, 45]])
def test_verify_of_a_config_asking_for_huge_or_malformed_toy_data_is_one_line(copy, capsys, sizes):
    run = copy("run")
    edit_json(run / "config.json", lambda c: c["dataset_options"].update(sizes=sizes))
    began = time.perf_counter()
    status, _, err = main(capsys, "verify", run)
    assert status == 2 and time.perf_counter() - began < 20
    one_line(err, "toy", "sizes" if sizes[0] != 10 ** 12 else "1 GiB")


def test_verify_writes_no_cache_where_a_handed_config_says(copy, tmp_path, capsys):
    run = copy("run")
    elsewhere = tmp_path / "elsewhere"
    edit_json(run / "config.json", lambda c: c["dataset_options"].update(cache=str(elsewhere)))
    status, _, err = main(capsys, "verify", run)
    assert status == 2 and not elsewhere.exists()
    one_line(err, "config.json", "cache", "MILESBOOK_CACHE")


@pytest.mark.parametrize("name", ["summary.json", "history.csv", "config.json", "provenance.json"])
def test_a_fifo_in_a_run_folder_is_refused_not_opened(copy, capsys, name):
    run = copy("run")
    (run / name).unlink()
    os.mkfifo(run / name)
    done = subprocess.run([sys.executable, "-m", "milesbook", "verify", str(run)], capture_output=True, text=True,
                          timeout=60)  # opening a FIFO would wait for a writer forever
    assert done.returncode == 2
    one_line(done.stderr, name)


# -- 4. a refused resume loses nothing -------------------------------------------------------------------

@pytest.mark.parametrize("crafted", ["selected", "last-empty-model", "last-not-a-dict", "last-wrong-shapes"])
def test_a_refused_resume_keeps_the_finished_runs_files(copy, capsys, crafted):
    run = copy("run")
    if crafted == "selected":
        torch.save({"epoch": "two", "model": [1, 2]}, run / "selected.pt")
    else:
        state = torch.load(run / "last.pt", weights_only=True)
        if crafted == "last-empty-model":
            state["model"] = {}
        elif crafted == "last-not-a-dict":
            state = [1, 2, 3]
        else:
            state["model"] = {k: torch.zeros(3) for k in state["model"]}
        torch.save(state, run / "last.pt")
    before = snapshot(run)
    status, _, err = main(capsys, "train", "--dataset", "toy", "--data-option", "sizes", "[90, 45, 45]",
                          "--method", "vanilla", "--epochs", "3", "--out", run, "--resume")
    assert status == 2
    one_line(err, "selected.pt" if crafted == "selected" else "last.pt")
    assert snapshot(run) == before  # summary.json, config.json (2 epochs), selected.pt: all as they were


# -- 5. one line for every bad value ---------------------------------------------------------------------

BAD_VALUES = [  # (file, edit, words the line must hold)
    ("config.json", lambda c: c.update(lr="fast"), ("config.json", "lr")),
    ("config.json", lambda c: c.pop("method"), ("config.json", "method")),
    ("config.json", lambda c: c.update(tau=[1]), ("config.json", "tau")),
    ("config.json", lambda c: c.update(tau=-3.0), ("config.json", "tau")),
    ("config.json", lambda c: c.update(method="no-such"), ("config.json", "method")),
    ("config.json", lambda c: c.update(threads=True), ("config.json", "threads")),
    ("config.json", lambda c: c.update(mslr_lrs={"image": "x"}), ("config.json", "mslr_lrs")),
    ("config.json", lambda c: c.clear(), ("config.json",)),
    ("provenance.json", lambda p: p.update(threads="one"), ("provenance.json", "threads")),
    ("provenance.json", lambda p: p.pop("device.kind"), ("provenance.json", "device.kind")),
    ("provenance.json", lambda p: p.update(encoders=[1]), ("provenance.json", "encoders")),
    ("summary.json", lambda s: s.update(epochs="2"), ("summary.json", "epochs")),
]


@pytest.mark.parametrize("name,edit,words", BAD_VALUES)
def test_a_bad_value_in_a_run_folder_is_one_line(copy, capsys, name, edit, words):
    run = copy("run")
    edit_json(run / name, edit)
    status, _, err = main(capsys, "verify", run)
    assert status == 2
    one_line(err, *words)


@pytest.mark.parametrize("text", ["[1, 2", "null", "\"text\"", "{\"a\": " * 5000])
def test_a_run_folder_file_that_is_not_json_is_one_line(copy, capsys, text):
    run = copy("run")
    (run / "config.json").write_text(text)
    status, _, err = main(capsys, "verify", run)
    assert status == 2
    one_line(err, "config.json")


def test_a_history_that_is_not_a_table_is_one_line(copy, capsys):
    run = copy("run")
    rows = (run / "history.csv").read_text().splitlines()
    (run / "history.csv").write_text("\n".join([rows[0], rows[1].replace(",", ",abc,", 1), *rows[2:]]) + "\n")
    status, _, err = main(capsys, "verify", run)
    assert status == 2
    one_line(err, "history.csv", "row 1")


REPORT_VALUES = [
    (lambda r: r.update(kind="other"), "kind"),
    (lambda r: r.pop("fusion_results"), "fusion_results"),
    (lambda r: r["fusion_results"]["concat"]["methods"]["vanilla"]["values"].update(fusion=["a"]), "fusion"),
    (lambda r: r["fusion_results"]["concat"]["methods"]["vanilla"]["values"].update(fusion=[0.5]), "disagree"),
    (lambda r: r["base"].update(epochs=-1), "epochs"),
    (lambda r: r.update(methods="vanilla"), "methods"),
]


@pytest.mark.parametrize("edit,word", REPORT_VALUES)
def test_a_bad_value_in_a_report_is_one_line(copy, capsys, edit, word):
    report = copy("report")
    edit_json(report / "report.json", edit)
    status, _, err = main(capsys, "verify", report)
    assert status == 2
    one_line(err, "report.json", word)


def test_a_bad_study_json_and_junk_journal_lines_are_one_line(copy, capsys):
    search = copy("search")
    edit_json(search / "study.json", lambda s: s.update(study_name=5))
    status, _, err = main(capsys, "search", "--dataset", "toy", "--data-option", "sizes", "[90, 45, 45]",
                          "--method", "vanilla", "--epochs", "1", "--trials", "2", "--out", search)
    assert status == 2
    one_line(err, "study.json", "study_name")
    shutil.rmtree(search)
    for junk in (b"not json at all\n", b"[1, 2]\n", b'{"op_code": 99}\n', b'{"op_code": 4, "x": 1}\n'):
        search = copy("search")
        with open(search / "search.journal", "ab") as f:
            f.write(junk)
        status, _, err = main(capsys, "search", "--status", search)
        assert status == 2, junk
        one_line(err, "search.journal")
        shutil.rmtree(search)


def test_a_study_name_with_terminal_escapes_is_printed_escaped(copy, tmp_path, capsys):
    status, out, _ = main(capsys, "search", "--dataset", "toy", "--data-option", "sizes", "[90, 45, 45]",
                          "--method", "vanilla", "--epochs", "1", "--trials", "1", "--out", tmp_path / "s",
                          "--study-name", "evil\x1b[2J\x1b[31mred")
    assert status == 0
    assert "\x1b" not in out and "evil\\x1b[2J" in out
    status, out, _ = main(capsys, "search", "--status", tmp_path / "s")
    assert status == 0 and "\x1b" not in out and "evil\\x1b[2J" in out


# -- 6. a killed verify leaves nothing behind ------------------------------------------------------------

def test_verify_killed_by_sigterm_removes_its_temporary_folder(copy, tmp_path):
    run = copy("run")
    edit_json(run / "config.json", lambda c: c.update(dataset_options={"sizes": [3000, 45, 45]}))
    edit_json(run / "provenance.json", lambda p: p.update({"data.fingerprint": "0"}))
    temp = tmp_path / "temp"
    temp.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "milesbook", "verify", str(run)], env={**os.environ,
                               "TMPDIR": str(temp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(temp.glob("milesbook-verify-*/rerun")):
        time.sleep(0.1)
    assert any(temp.glob("milesbook-verify-*/rerun")), "verify never started retraining"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in err, err
    assert not any(temp.iterdir())
