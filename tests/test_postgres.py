"""The README's many-machine search, on a real PostgreSQL server this test starts (the system's
`initdb`/`pg_ctl`, run as an unprivileged user when the tests run as root, since PostgreSQL refuses
root): two `milesbook search` commands, each its own --out, share one study through
`--storage postgresql://…` written as the README writes it."""
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .test_search import ONE_THREAD, TOY, read_trials

NOBODY = 65534


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    assert found, (f"PostgreSQL's {name} is not installed: apt-get install postgresql (the machines this "
                   "project runs on have it)")
    return found


def _as_server_user():
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh PostgreSQL server on 127.0.0.1 with trust authentication; yields its URL, stops it after."""
    home = Path(tempfile.mkdtemp(prefix="milesbook-pg-"))  # not under pytest's root-only folders
    os.chmod(home, 0o755)
    if os.geteuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    data, port = home / "data", _free_port()
    run = dict(preexec_fn=_as_server_user, capture_output=True, text=True, timeout=120, cwd=home)
    done = subprocess.run([_postgres_bin("initdb"), "-D", str(data), "-U", "milesbook", "--auth=trust",
                           "--no-sync"], **run)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([_postgres_bin("pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "-o",
                           f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c fsync=off", "start"], **run)
    assert done.returncode == 0, done.stderr + (home / "log").read_text()
    try:
        yield f"postgresql://milesbook@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([_postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], **run)
        shutil.rmtree(home, ignore_errors=True)


def test_two_machines_share_one_study_through_postgresql(tmp_path, postgres_url):
    common = [sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "1", "--trials", "6",
              "--storage", postgres_url]
    first = subprocess.Popen([*common, "--out", str(tmp_path / "machine-a")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    time.sleep(1.0)  # the second "machine" joins a study that already exists
    second = subprocess.Popen([*common, "--out", str(tmp_path / "machine-b")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    for process in (first, second):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    rows = read_trials(tmp_path / "machine-a")  # the same study, seen from either folder
    assert rows == read_trials(tmp_path / "machine-b")
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert sorted(int(r["draw"]) for r in complete) == list(range(6))  # six draws, none doubled
    ran_here = {name: sorted((tmp_path / name / "trials").iterdir()) for name in ("machine-a", "machine-b")}
    assert all(ran_here.values()), "both commands trained trials"
    status = subprocess.run([sys.executable, "-m", "milesbook", "search", "--status", str(tmp_path / "machine-a"),
                             "--storage", postgres_url], capture_output=True, text=True, env=ONE_THREAD, timeout=120)
    assert status.returncode == 0 and "6 complete" in status.stdout, status.stderr


def test_a_postgresql_url_without_a_driver_is_one_line(monkeypatch):
    import importlib.util

    from milesbook.errors import UserError
    from milesbook.search.study import with_driver
    assert with_driver("postgresql://u:p@h/db").startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert with_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"  # named: kept
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"needs a PostgreSQL driver: pip install 'psycopg\[binary\]'") as error:
        with_driver("postgresql://u:secret@h/db")
    assert "secret" not in str(error.value)
