"""Where a study lives and what makes it one: the storage (a journal file in DIR by default, or an RDB
URL), the job a worker runs, the study's definition and default name, and the checks that keep one
study per search folder."""
from __future__ import annotations

import hashlib
import json
import os
import random
import time

try:
    import fcntl  # only whether flock exists (`journal_lock`)
except ImportError:  # Windows: Optuna's own file lock
    fcntl = None
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from filelock import UnixFileLock

from ..config import TrainConfig, relevant_config
from ..errors import UserError
from ..handed import StudyJson, printable, read_json, refuse_link
from ..atomic import check_writable
from ..runs import write_json
from .draws import GRACE_S, HEARTBEAT_S
from .sampler import make_pruner, make_sampler

JOURNAL = "search.journal"
POLL_S = 2.0  # how often an idle worker looks whether others' trials ended


def open_storage(url: str | None, out: Path, repair: bool = True):
    """Optuna storage: `url` (an RDB URL such as sqlite:///search.db or postgresql://…), else the
    journal file `out/search.journal` (many processes on one machine, or a shared file system), whose
    last record a killed writer cut off is removed first when `repair` (`repair_journal`). The journal
    and its lock must be real files in `out`, never links: nothing is written outside the folder."""
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        path = Path(out) / JOURNAL
        for member in (path, path.with_name(JOURNAL + ".flock")):
            refuse_link(member, "file")
        lock = journal_lock(path.with_name(JOURNAL + ".flock"))
        if repair:
            repair_journal(path, lock)
        check_journal(path)
        try:  # replays every record: a record that is not Optuna's fails here, not halfway through a search
            return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
        except Exception as error:  # JSON, key or type errors from Optuna's replay of a foreign record
            reason = printable(str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__)
            raise UserError(f"{path} does not read as an Optuna journal ({type(error).__name__}: {reason}); it was "
                            "edited or is not a search's journal: restore it, or search into another --out") from None
    return open_rdb_storage(url)


# PostgreSQL advisory lock key ("milesbook" in ASCII): held while Optuna creates or checks its tables.
SCHEMA_LOCK = 0x6D696C6573626F6F
SCHEMA_TRIES = 8  # elsewhere: how often a creation that raced another opener's is tried


def open_rdb_storage(url: str):
    """Optuna's RDBStorage on `url`, its tables created if the database has none yet — also when many
    commands, on one machine or many, open the same empty database at the same instant.

    Optuna creates its tables without guarding against a concurrent creator (each CREATE TABLE after
    looking whether the table exists, the type PostgreSQL makes for it, then the alembic stamp): two
    at once fail with UniqueViolation on pg_type_typname_nsp_index, DuplicateTable or "table …
    already exists". On PostgreSQL the creation therefore runs under a session-level advisory lock
    (pg_advisory_lock) rather than a retry: the second opener waits, then finds the tables finished
    and only checks them — nothing depends on recognising each half-made state by its error, no
    attempt count can be too small for eight machines, and the server drops the lock with the
    connection if its holder dies. Other databases (SQLite: several commands on one machine) have no
    such lock: there a creation that fails is tried again a few times, each try finding more of the
    tables the other opener made, until all are there.

    A URL that does not open (no server at that host and port, a wrong password, no such database
    or folder, an unknown scheme) is a one-line UserError naming the cause, without the password."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool
    shown = shown_url(url)
    target = with_driver(url)
    # SQLite serialises writers: wait for the lock instead of failing at once.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:  # connect first, so that a URL that does not open says so, whatever Optuna would do next
        engine = sqlalchemy.create_engine(target, poolclass=NullPool, **kwargs)
        connection = engine.connect()
    except Exception as error:  # any driver's error: a bad URL, a missing folder or driver, no server
        hint = ("; give an SQLAlchemy URL, e.g. sqlite:///DIR/search.db or postgresql://user:password@host/db"
                if isinstance(error, sqlalchemy.exc.ArgumentError) else
                "; its folder must exist and be writable" if url.startswith("sqlite") else "")
        raise UserError(f"cannot open --storage {shown}: {_reason(error, url, target)}{hint}") from None
    locked = engine.dialect.name == "postgresql"
    try:
        if locked:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
        for attempt in range(1 if locked else SCHEMA_TRIES):
            try:
                return optuna.storages.RDBStorage(target, engine_kwargs=kwargs)
            except (sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError) as error:
                failed = error  # another opener's table or stamp came first: the next try finds it
                if attempt + 1 < (1 if locked else SCHEMA_TRIES):
                    time.sleep(0.1 * (attempt + 1) * (1 + random.random()))
            except Exception as error:  # e.g. tables of an Optuna this one cannot read
                failed = error
                break
        raise UserError(f"--storage {shown} opened, but Optuna's tables in it could not be created or "
                        f"checked: {_reason(failed, url, target)}")
    finally:
        connection.close()  # ends the session, and with it the advisory lock
        engine.dispose()


def _reason(error: Exception, *urls: str) -> str:
    """A driver's error in one line: its own message (not SQLAlchemy's wrapping and link), the
    lines joined, any URL (it may hold a password) shown without its password."""
    while True:  # SQLAlchemy's wrapper holds the driver's error; Optuna's StorageInternalError its cause
        inner = getattr(error, "orig", None) or (
            error.__cause__ if isinstance(error, optuna.exceptions.StorageInternalError) else None)
        if inner is None:
            break
        error = inner
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.strip().startswith("(Background on this error at")]
    reason = " ".join("; ".join(lines).split()) or type(error).__name__
    for url in urls:
        reason = reason.replace(url, shown_url(url))
        password = _password(url)
        if password and len(password) >= 4:  # a shorter one could be any word's letters
            reason = reason.replace(password, "***")
    return reason


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).password
    except Exception:
        return None


def check_journal(path: Path) -> None:
    """Every whole line of the journal is a record (a JSON object with an integer `op_code`): Optuna
    skips a bad last line when it reads, but once a record is appended after it the journal no longer
    reads at all — so a line that is not a record is refused now, in one line, before anything is added.
    (A last line without its newline is a record cut off by a killed writer: `repair_journal`'s.)"""
    from ..handed import MAX_TABLE_BYTES, regular_file
    if not path.exists():
        return
    regular_file(path)
    if path.stat().st_size > MAX_TABLE_BYTES * 4:
        raise UserError(f"{path} is larger than {MAX_TABLE_BYTES * 4 >> 20} MiB: not a search's journal; "
                        "search into another --out")
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
                raise UserError(f"{path}, line {number}: not an Optuna journal record ({printable(line[:60].decode('utf-8', 'replace').strip())!r}); "
                                "the journal was edited or is not a search's: restore it, or search into another --out")


def _cut_tail(f) -> tuple[int, int]:
    """(file size, end of its last whole line) of a journal opened in binary mode."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return size, size
    keep, block = size, 1 << 16
    while keep > 0:  # back to the end of the last whole line
        start = max(0, keep - block)
        f.seek(start)
        chunk = f.read(keep - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return size, start + cut + 1
        keep = start
    return size, 0


def cut_record_bytes(path: Path) -> int:
    """How many bytes of the journal's last record a killed writer cut off (0: none). Reads only."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb") as f:
        size, keep = _cut_tail(f)
    return size - keep


def repair_journal(path: Path, lock=None) -> bool:
    """Drop a last record that a killed writer cut off (every record is one line, appended whole by a
    writer holding the lock, so only the last can be cut): Optuna skips such a line when reading, but the
    next record would be appended onto it and the journal would no longer read at all. Every record
    before it is kept as it was; the trial the cut record was about is then lost with its worker and its
    draw runs again. Says so in one line; returns whether it repaired anything."""
    import sys
    if not path.exists() or path.stat().st_size == 0:
        return False
    if lock is not None:
        lock.acquire()
    try:
        with open(path, "rb+") as f:
            size, keep = _cut_tail(f)
            if keep == size:
                return False
            f.truncate(keep)
    finally:
        if lock is not None:
            lock.release()
    print(f"milesbook: {path}: its last record was cut off ({size - keep} bytes, a process killed while writing); "
          "removed it — every earlier record is kept, and the trial it was about runs again", file=sys.stderr)
    return True


POSTGRES_DRIVERS = (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2"))  # preferred first


def with_driver(url: str) -> str:
    """A `postgresql://…` URL (no driver named) with the PostgreSQL driver that is installed, psycopg 3
    or psycopg2, so the same URL works on every machine; other URLs as they are."""
    import importlib.util
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    for module, dialect in POSTGRES_DRIVERS:
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{rest}"
    raise UserError(f"--storage {shown_url(url)} needs a PostgreSQL driver: pip install 'psycopg[binary]' "
                    "(or psycopg2-binary), then run the same command again")


def journal_lock(path: Path):
    """The journal's write lock on `path` (the `.flock` file beside it), as Optuna's JournalFileBackend
    takes it (acquire, release; acquire waits as long as it takes): an flock (filelock's UnixFileLock),
    which the kernel drops when its process dies, so a worker killed while writing leaves no lock behind
    (Optuna's default symlink lock would make the next command wait out a 30-second grace period). A link
    put in the lock's place is refused (filelock opens it with O_NOFOLLOW: an OSError), never created
    through. On a file system without flock it fails rather than falling back to filelock's soft lock, a
    file that a killed worker would leave behind. Without fcntl (Windows): None, Optuna's own lock."""
    if fcntl is None:
        return None
    return UnixFileLock(path, fallback_to_soft=False)


def shown_url(url: str | None) -> str:
    """The storage for messages and study.json: the journal file's name, or the URL without its password."""
    if url is None:
        return JOURNAL
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


@dataclass
class Job:
    """Everything a worker needs to run a study's trials (picklable, for worker processes)."""
    base: dict              # TrainConfig.to_dict() of what is not searched (test_split off)
    out: str
    trials: int
    space: dict             # {name: SearchRange}
    modalities: tuple
    sampler: str = "random"
    pruner: str = "none"
    storage: str | None = None
    study_name: str = ""
    definition: dict = field(default_factory=dict)
    workers: int = 1
    stream: int = 0         # this worker's index among the command's workers
    grace: float = GRACE_S
    heartbeat: float = HEARTBEAT_S
    poll: float = POLL_S

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.base)

    def study(self):
        storage = open_storage(self.storage, Path(self.out))
        return optuna.load_study(study_name=self.study_name, storage=storage,
                                 sampler=make_sampler(self.sampler, self.config.seed, self.stream),
                                 pruner=make_pruner(self.pruner, self.config.epochs))


def space_signature(space: dict) -> dict:
    """The ranges without their sources (a study is the same whatever file named the same range)."""
    return {name: {"low": r.low, "high": r.high, "log": r.log, "choices": list(r.choices)}
            for name, r in space.items()}


def definition_of(base: TrainConfig, space: dict, sampler: str, pruner: str) -> dict:
    """What makes two searches the same study: the fixed settings that change results, the ranges,
    the sampler and the pruner (not --trials, --workers or the device)."""
    fixed = {k: v for k, v in relevant_config(base.to_dict()).items() if k not in space}
    # Through JSON, so that it compares equal to what the storage gives back (lists, not tuples).
    return json.loads(json.dumps({"config": fixed, "space": space_signature(space),
                                  "sampler": sampler, "pruner": pruner}))


def default_study_name(base: TrainConfig, definition: dict) -> str:
    """"<dataset>-<method>-<fusion>-<epochs>ep-<8 hex digits of the whole definition>"."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:8]
    return f"{base.dataset}-{base.method}-{base.fusion}-{base.epochs}ep-{digest}"


def _differences(stored: dict, mine: dict, prefix: str = "") -> list[str]:
    """"space.tau.high (stored 0.5, yours 0.3)" for every leaf that differs."""
    out = []
    for key in sorted(set(stored) | set(mine)):
        a, b = stored.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} (stored {a}, yours {b})")
    return out


def _refuse_other_study(out: Path, name: str, definition: dict, storage_url: str | None) -> None:
    """DIR holds one study (its trial folders are numbered by it): refuse another, before writing."""
    record = out / "study.json"
    if record.exists() or record.is_symlink():
        saved = read_json(record, StudyJson)
        if saved["study_name"] != name or saved["storage"] != shown_url(storage_url):
            diff = _differences(saved.get("definition", {}), definition)
            what = f"differs in: {'; '.join(diff)}" if diff else f"stored in {saved['storage']}"
            raise UserError(f"{out} holds the search study {saved['study_name']!r} ({what}); continue it with "
                            "the same flags (and --space, --storage, --study-name), or choose another --out")
    if storage_url is None and (out / JOURNAL).exists():
        others = [n for n in optuna.get_all_study_names(open_storage(None, out)) if n != name]
        if others:
            raise UserError(f"{out / JOURNAL} holds the study {others[0]!r}, made with other settings; "
                            "continue it with the same flags, or choose another --out")
    if not record.exists() and (out / "trials").exists() and any((out / "trials").iterdir()):
        raise UserError(f"{out / 'trials'} holds runs of a search that is not in the storage; "
                        "choose another --out (or give the --storage it used)")


def open_study(job: Job):
    """Create the job's study, or reopen it after checking it was made with the same definition."""
    out = Path(job.out)
    _refuse_other_study(out, job.study_name, job.definition, job.storage)
    if job.storage is None:
        check_writable(out, "choose another --out")  # the journal's folder (an RDB URL is opened first)
    storage = open_storage(job.storage, out)
    if job.storage is not None:
        check_writable(out, "choose another --out")  # its trials and reports
    names = optuna.get_all_study_names(storage)
    if job.study_name in names:
        stored = optuna.load_study(study_name=job.study_name, storage=storage).user_attrs.get("definition")
        if stored is not None and stored != job.definition:
            raise UserError(f"study {job.study_name!r} in {shown_url(job.storage)} was made with other settings "
                            f"({'; '.join(_differences(stored, job.definition))}); use the same flags, or "
                            "another --study-name")
    study = optuna.create_study(study_name=job.study_name, storage=storage, direction="maximize",
                                load_if_exists=True)
    if "definition" not in study.user_attrs:  # a brand-new study (two workers may both write it)
        study.set_user_attr("definition", job.definition)
        study.set_user_attr("space_sources", {n: r.source for n, r in job.space.items()})
    study.set_user_attr("trials_asked", job.trials)  # the latest command's --trials, for reports
    write_json(out / "study.json", {"study_name": job.study_name, "storage": shown_url(job.storage),
                                           "definition": job.definition})
    return study
