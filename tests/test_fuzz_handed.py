"""Fuzzing the files you are handed: every key of a real config.json, provenance.json, report.json,
study.json and meta.json turned into a hostile value (or removed), then the command that reads it.
Whatever the value: exit 0 or 2 (verify: 0, 1, 2 or 3 — its verdicts), never a traceback, nothing
written outside the folders the command was given, and no run longer than a bound."""
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import milesbook as mb
from milesbook import cli

TOY = {"sizes": [60, 30, 30]}
BOUND_S = 60  # any one command; a refused one takes well under a second
EXAMPLES = 40  # per file: 200 examples in all, about half a minute (most values are refused at once)

HOSTILE = [None, True, False, 0, -1, 1, 2.5, -1e308, 1e9, 10 ** 12, float("nan"), float("inf"), "", "x", "0",
           "../../outside", "/", "a=sys:exit", "os:system", "sqlite:///OUTSIDE/made.db", "postgresql://10.255.255.1/x",
           "\x1b[2J\x1b[31mred", "é" * 300, [], [1, "a"], [[[]]], {}, {"a": None}, {"x": {"y": [1e9]}}]


def paths(value, prefix=()):
    """Every place in a JSON value: key paths into objects and arrays (the root excluded)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    found = []
    for key, inner in items:
        found.append((*prefix, key))
        if len(prefix) < 5:
            found += paths(inner, (*prefix, key))
    return found


def mutate(value, path, new, delete: bool):
    """`value` with the place at `path` replaced by `new` (or removed)."""
    value = json.loads(json.dumps(value))
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The real folders the mutants are copies of: a run, a compare report, a search, a data folder."""
    root = tmp_path_factory.mktemp("real")
    data = mb.load_dataset("toy", **TOY)
    config = mb.TrainConfig(dataset="toy", dataset_options=TOY, epochs=1, method="vanilla")
    mb.train(config, root / "run", dataset=data, progress=False)
    mb.compare("toy", ["vanilla"], seeds=2, out=root / "report", base=config, progress=False)
    from milesbook import search
    search.search(config, root / "search", trials=1, progress=False, data=data)
    own = root / "data"
    own.mkdir()
    rng = np.random.default_rng(0)
    np.save(own / "audio.npy", rng.normal(size=(90, 6)).astype(np.float32))
    np.save(own / "image.npy", rng.integers(0, 255, size=(90, 6, 5), dtype=np.uint8))
    np.save(own / "labels.npy", np.arange(90) % 3)
    (own / "meta.json").write_text(json.dumps({"name": "mine", "class_names": ["a", "b", "c"], "num_classes": 3,
                                               "task": "multiclass", "normalize": {"audio": [0.0, 1.0]}}))
    return root


# (folder, file, the command given the handed folder H and an output folder O, the statuses it may give)
CASES = {
    "config": ("run", "config.json", lambda h, o: ["verify", h], {0, 1, 2, 3}),
    "provenance": ("run", "provenance.json", lambda h, o: ["verify", h], {0, 1, 2, 3}),
    "report": ("report", "report.json", lambda h, o: ["verify", h, "--out", o], {0, 1, 2, 3}),
    "study": ("search", "study.json", lambda h, o: ["search", "--status", h], {0, 2}),
    "meta": ("data", "meta.json", lambda h, o: ["train", "--dataset", h, "--epochs", "1", "--out", o], {0, 2}),
}


def listing(folder: Path, skip: tuple[Path, ...]) -> dict:
    """Every file under `folder` but those under `skip`, with its size and modification time (a folder:
    only that it is there — making `skip`'s folders changes their parent's time)."""
    found = {}
    for p in folder.rglob("*"):
        if not any(p == s or s in p.parents for s in skip):
            stat = p.lstat()
            found[str(p)] = None if p.is_dir() and not p.is_symlink() else (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_values_in_a_handed_file(real, tmp_path, monkeypatch, capsys, case):
    folder, name, command, statuses = CASES[case]
    original = json.loads((real / folder / name).read_text())
    places = paths(original)
    assert len(places) >= 5, places  # a real file with keys to mutate
    monkeypatch.chdir(tmp_path)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(place=st.sampled_from(places), new=st.sampled_from(HOSTILE), delete=st.booleans())
    def one(place, new, delete):
        where = Path(tempfile.mkdtemp(dir=tmp_path))
        handed = Path(shutil.copytree(real / folder, where / "handed", symlinks=True))
        out = where / "out"
        text = json.dumps(mutate(original, place, new, delete))
        (handed / name).write_text(text.replace("OUTSIDE", str(tmp_path / "OUTSIDE")))
        before = listing(tmp_path, (handed, out))
        capsys.readouterr()
        began = time.perf_counter()
        status = cli.main([str(a) for a in command(handed, out)])  # an exception here is a traceback
        took = time.perf_counter() - began
        _, err = capsys.readouterr()
        shown = f"{name}: {place} → {'(removed)' if delete else repr(new)}"
        assert status in statuses, (shown, status, err)
        assert "Traceback" not in err, (shown, err)
        if status == 2:
            assert len(err.strip().splitlines()) == 1, (shown, err)
        assert took < BOUND_S, (shown, took)
        after = listing(tmp_path, (handed, out))
        assert after == before, (shown, {p for p in set(after) | set(before) if after.get(p) != before.get(p)})
        assert not (tmp_path / "OUTSIDE").exists(), shown
        shutil.rmtree(where)

    one()
