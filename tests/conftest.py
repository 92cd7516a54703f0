import os
import sys
import tempfile

import pytest

# Built datasets go to a throw-away cache, never the user's; figures are drawn headless.
os.environ.setdefault("MILESBOOK_CACHE", tempfile.mkdtemp(prefix="milesbook-cache-"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


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
