"""The results version's guard: a tiny fixed run of every method (two epochs of a small slice of
digits-av, one thread) must give the committed numbers in tests/golden.json.

A change that moves any method's numbers fails here until its commit bumps
`milesbook.provenance.RESULTS_VERSION` and rewrites the golden values:

    .venv/bin/python tests/test_golden.py --write

(which refuses to write changed values under an unchanged version). The tolerance absorbs what
another CPU instruction set or thread count does to a few steps (≈ 1e-5 relative), not a real change.
A bitwise hash would fail on a machine with another instruction set.
"""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).with_name("golden.json")
RTOL, ATOL = 1e-4, 1e-6


def small_digits():
    """digits-av cut to 160 training, 90 validation and 90 test samples (the first of each split)."""
    import milesbook as mb
    from milesbook.datasets import Split
    data = mb.load_dataset("digits-av")
    sizes = {"train": 160, "val": 90, "test": 90}
    splits = {name: Split({m: x[:sizes[name]] for m, x in s.inputs.items()}, s.labels[:sizes[name]])
              for name, s in data.splits.items()}
    return type(data)(**{**data.__dict__, "splits": splits, "name": "digits-av-golden"})


def golden_methods() -> list[str]:
    from milesbook.methods import METHODS
    return [*sorted(METHODS), "unimodal-image", "unimodal-audio"]


def tiny_run(method: str, data, folder: Path) -> dict:
    """The numeric history and test history of two epochs of `method` (wall-clock column left out)."""
    import milesbook as mb
    from milesbook.runs import read_history
    config = mb.TrainConfig(dataset="digits-av", method=method, epochs=2, batch_size=32, seed=0, threads=1,
                            device="cpu", gblend_mode="offline", gblend_every=1, mslr_lrs={"image": 1e-3, "audio": 3e-3},
                            arl_warmup=1, remix_warmup=1, aug_every=1)  # the 2025 rules act in epoch 2
    mb.train(config, folder, dataset=data, progress=False)
    tables = {"history": read_history(folder)}
    if (folder / "test_history.csv").exists():
        import csv
        with open(folder / "test_history.csv") as f:
            tables["test_history"] = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return {name: [{k: v for k, v in row.items() if k != "seconds"} for row in rows] for name, rows in tables.items()}


@pytest.fixture(scope="module")
def data():
    return small_digits()


def test_golden_file_is_for_this_results_version():
    from milesbook.provenance import RESULTS_VERSION
    golden = json.loads(GOLDEN.read_text())
    assert golden["results_version"] == RESULTS_VERSION, \
        "RESULTS_VERSION changed without new golden values: run `python tests/test_golden.py --write`"
    assert sorted(golden["methods"]) == sorted(golden_methods()), "a method has no golden values: write them"


@pytest.mark.parametrize("method", golden_methods())
def test_method_reproduces_its_golden_numbers(tmp_path, data, method):
    golden = json.loads(GOLDEN.read_text())["methods"][method]
    moved = first_move(tiny_run(method, data, tmp_path / method), golden)
    assert moved is None, (f"{method} {moved} — if the change is meant, bump RESULTS_VERSION and run "
                           "`python tests/test_golden.py --write`")


def first_move(mine: dict, golden: dict) -> str | None:
    """The first value of `mine` outside the tolerance of `golden` ("history epoch 2 u_audio: …"), or None."""
    if mine.keys() != golden.keys():
        return f"tables {sorted(mine)}, golden {sorted(golden)}"
    for table in golden:
        if len(mine[table]) != len(golden[table]):
            return f"{table}: {len(mine[table])} epochs, golden {len(golden[table])}"
        for row, expected in zip(mine[table], golden[table]):
            if row.keys() != expected.keys():
                return f"{table}: columns changed"
            for key, value in expected.items():
                got = row[key]
                if not ((math.isnan(value) and math.isnan(got)) or math.isclose(got, value, rel_tol=RTOL, abs_tol=ATOL)):
                    return f"{table} epoch {int(row['epoch'])} {key}: {got!r}, golden {value!r}"
    return None


def write() -> None:
    """Recompute the golden values; refuse when they moved (beyond the test's tolerance) but
    RESULTS_VERSION did not."""
    import tempfile
    from milesbook.provenance import RESULTS_VERSION
    data = small_digits()
    with tempfile.TemporaryDirectory() as tmp:
        values = {m: tiny_run(m, data, Path(tmp) / m) for m in golden_methods()}
    old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else None
    if old is not None and old["results_version"] == RESULTS_VERSION:
        moved = sorted(m for m in values if m in old["methods"] and first_move(values[m], old["methods"][m]))
        if moved:
            sys.exit(f"the numbers of {', '.join(moved)} moved but RESULTS_VERSION is still {RESULTS_VERSION}: bump "
                     "it in milesbook/provenance.py, say in CHANGELOG.md what moved and why, then write again")
    GOLDEN.write_text(json.dumps({"results_version": RESULTS_VERSION, "torch": torch.__version__,
                                  "methods": values}, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({len(values)} methods, results version {RESULTS_VERSION})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden.py --write")
    write()
