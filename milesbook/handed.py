"""Folders you are handed: run folders, reports and searches that someone else wrote, read without
trusting them.

Researchers pass these folders around, and a careless edit is as likely as a crafted one. Whatever
such a folder holds, milesbook promises four things:

- **It is read against a declared schema.** Every JSON file milesbook reads back — `config.json`,
  `provenance.json`, `summary.json`, `report.json`, `study.json`, `best.json` — goes through
  `read_json` with the schema below (pydantic: types, ranges, required keys), and `history.csv`
  through `read_table`. A breach is one line naming the file and the key (a `UserError`), before
  anything is moved, deleted or trained. Counts come from what the folder holds, never from what it
  claims: `verify` re-runs the epochs the history has, a report's seeds are those it has values for.
- **Nothing is done through a link.** A member of a run, report or search folder that milesbook
  deletes, moves, repairs or writes must be a regular file or folder, not a symbolic link, a FIFO or a
  device (`refuse_link`, `no_links_below`): nothing is written outside the folder you named.
  Non-regular files are never opened (a FIFO would hang the reader).
- **Nothing named in it is imported, connected to or written to.** An encoder factory
  ("package.module:factory"), a storage URL or a folder for a dataset's cache is taken only from the
  command line or the Python call; a handed run or report that names one says which flag to pass
  (`refuse_imports`; `search --status` asks for `--storage`; `checked_config` refuses a cache folder).
- **What it says is printed harmlessly**: control characters in names are escaped (`printable`).
"""
from __future__ import annotations

import copy
import csv
import functools
import json
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import UserError

MAX_JSON_BYTES = 64 << 20    # our largest report.json is a few hundred kB
MAX_TABLE_BYTES = 256 << 20  # history.csv: one row per epoch
MAX_EPOCHS = 100_000         # far beyond any run; a claimed count above it is not a run's
MAX_SEEDS = 10_000
EDITED = "it is not as milesbook writes it (edited by hand, or not from milesbook)"


# -- reading ---------------------------------------------------------------------------------------

def regular_file(path: Path, what: str = "") -> Path:
    """`path` when it is a regular file (a link to one is fine for reading); a FIFO, a device or a
    folder is refused in one line without being opened (opening a FIFO waits for a writer forever)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror or error}){what}") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"{path} is not a regular file (a folder, FIFO or device): refused, nothing was read{what}")
    return path


def _read_bytes(path: Path, limit: int) -> bytes:
    regular_file(path)
    # O_NONBLOCK: should the file be swapped for a FIFO after the check, open does not wait for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror or error})") from None
    if len(data) > limit:
        raise UserError(f"{path} is larger than {limit >> 20} MiB, far more than milesbook writes there: refused; "
                        f"{EDITED}")
    return data


def _location(loc: tuple) -> str:
    """("fusion_results", "concat", "methods", "miles", "values", "fusion", 2) → "fusion_results.concat
    .methods.miles.values.fusion[2]"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the whole file)"


def _short(value, width: int = 60) -> str:
    text = printable(json.dumps(value, default=str) if not isinstance(value, str) else repr(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def validated(value, schema: type[BaseModel], where: str):
    """`value` checked against `schema` (a pydantic model): the value as given, or a one-line UserError
    naming `where` and the first key that breaks the schema."""
    try:
        schema.model_validate(value)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        got = "" if first["type"] == "missing" else f", got {_short(first.get('input'))}"
        raise UserError(f"{where}: {printable(_location(first['loc']))} — {first['msg'].lower()}{got}; {EDITED}") from None
    return value


def read_json(path: Path, schema: type[BaseModel] | None = None) -> Any:
    """The JSON value in `path`, checked against `schema`. A file that is not regular, too large, not
    JSON or not of the schema is one line (a UserError) naming the file and the key."""
    path = Path(path)
    data = _read_bytes(path, MAX_JSON_BYTES)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UserError(f"{path} is not JSON ({printable(str(error))[:100]}); {EDITED}") from None
    return value if schema is None else validated(value, schema, str(path))


def read_table(path: Path) -> list[dict[str, float]]:
    """A table milesbook writes (history.csv, test_history.csv) as {column: float} rows; a cell that is
    not a number, a ragged row or a non-regular file is one line naming the file, row and column."""
    path = Path(path)
    text = _read_bytes(path, MAX_TABLE_BYTES).decode("utf-8", errors="replace")
    rows = []
    try:
        reader = csv.DictReader(text.splitlines())
        for number, row in enumerate(reader, start=1):
            if None in row or None in row.values():
                raise UserError(f"{path}, row {number}: {'more' if None in row else 'fewer'} cells than columns; {EDITED}")
            try:
                rows.append({k: float(v) for k, v in row.items()})
            except ValueError:
                bad = next(k for k, v in row.items() if not _is_number(v))
                raise UserError(f"{path}, row {number}, column {printable(bad)}: {_short(row[bad])} is not a number; "
                                f"{EDITED}") from None
    except csv.Error as error:
        raise UserError(f"{path} is not a table ({error}); {EDITED}") from None
    if rows and "epoch" not in rows[0]:
        raise UserError(f"{path} has no epoch column; {EDITED}")
    if [r["epoch"] for r in rows] != [float(e) for e in range(1, len(rows) + 1)]:
        raise UserError(f"{path}: its epoch column is not 1, 2, 3, …; {EDITED}")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# -- schemas ---------------------------------------------------------------------------------------
# Strict types (an integer is no boolean, a string no number) and the ranges a real file holds. Keys
# milesbook does not read are allowed: a file from a later version may hold more.

class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


@functools.lru_cache(maxsize=1)
def config_schema() -> type[BaseModel]:
    """config.json (`TrainConfig.to_dict()`): every general setting with its type and range, and every
    method knob with its declared default's type (its range is `TrainConfig.check`'s)."""
    from .config import TrainConfig
    from .methods import all_hyperparameters
    finite = {"allow_inf_nan": False}
    general = {
        "dataset": (str, Field(min_length=1, max_length=4096)),
        "dataset_options": (dict[str, Any], {}),
        "method": (str, Field(min_length=1, max_length=200)),
        "fusion": (Literal["concat", "sum"], "concat"),
        "encoder": (str, Field(default="auto", min_length=1, max_length=4096)),
        "feature_dim": (int, Field(default=64, ge=1, le=1 << 16)),
        "epochs": (int, Field(ge=1, le=MAX_EPOCHS)),
        "lr": (float, Field(gt=0, le=1e6, **finite)),
        "optimizer": (Literal["adam", "sgd"], "adam"),
        "weight_decay": (float, Field(default=0.0, ge=0, lt=1, **finite)),
        "batch_size": (int, Field(default=64, ge=2, le=1 << 24)),
        "seed": (int, Field(ge=0, le=2 ** 63 - 1)),
        "device": (Literal["auto", "cpu", "cuda"], "auto"),
        "threads": (int, Field(default=1, ge=1, le=4096)),
        "utilization_split": (Literal["val", "train"], "val"),
        "probes": (bool, True),
        "eval_batch_size": (int, Field(default=1000, ge=1, le=1 << 24)),
        "selection_tolerance": (float, Field(default=0.005, ge=0, le=1, **finite)),
        "test_split": (bool, True),
        "method_options": (dict[str, Any], {}),
    }
    missing = {f for f in TrainConfig.__dataclass_fields__} - set(general)
    assert not missing, f"config_schema lacks {missing}"  # a new setting must be declared here too
    knobs = {}
    for knob in all_hyperparameters().values():
        kind = type(knob.default)
        kind = dict[str, float] if kind is dict else kind
        knobs[knob.name] = (kind, Field(default=knob.default, **(finite if kind is float else {})))
    return create_model("ConfigJson", __base__=_Record, **general, **knobs)


def _aliased(name: str, fields: dict[str, tuple]) -> type[BaseModel]:
    """A model whose keys hold dots ("torch.version"): fields under Python names, keys as aliases."""
    spec = {key.replace(".", "_"): (kind, Field(default, alias=key)) for key, (kind, default) in fields.items()}
    return create_model(name, __base__=_Record, **spec)


class EncoderIdentity(_Record):
    class_: str = Field(alias="class")
    parameters: int = Field(ge=0)
    weights: str
    origin: str = "in memory"


_TEXT = str | None
ProvenanceJson = _aliased("ProvenanceJson", {
    "milesbook.version": (str, ...), "milesbook.results_version": (int, ...),
    "source.git.commit": (_TEXT, None), "source.git.dirty": (bool | None, None),
    "python": (_TEXT, None), "numpy.version": (_TEXT, None),
    "torch.version": (str, ...), "torch.git_version": (_TEXT, None),
    "cuda.version": (_TEXT, None), "cudnn.version": (int | None, None),
    "device.kind": (Literal["cpu", "cuda"], ...), "device.name": (str, ...), "cpu.capability": (_TEXT, None),
    "threads": (int, ...), "deterministic": (str, ...),
    "cudnn.deterministic": (bool | None, None), "cudnn.benchmark": (bool | None, None),
    "cuda.matmul.allow_tf32": (bool | None, None), "cudnn.allow_tf32": (bool | None, None),
    "env": (dict[str, _TEXT], None), "data.name": (_TEXT, None), "data.fingerprint": (_TEXT, None),
    "data.origin": (_TEXT, None), "encoders": (dict[str, EncoderIdentity] | None, None)})


class SummaryJson(_Record):
    method: str
    fusion: str
    seed: int = Field(ge=0)
    dataset: str
    modalities: list[str] = Field(min_length=1)
    metric: str
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    best_epoch: int = Field(ge=1, le=MAX_EPOCHS)
    provenance: ProvenanceJson | None = None


def check_summary_values(summary: dict, where: str) -> dict:
    """The numbers a report reads from a summary (`test_*`, `strict_*`, `last_*`, `best_val_*`) are numbers."""
    validated(summary, SummaryJson, where)
    for key, value in summary.items():
        if key.startswith(("test_", "strict_test_", "last_test_", "best_val_")) and \
                (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{where}: {printable(key)} — should be a number, got {_short(value)}; {EDITED}")
    return summary


class Difference(_Record):
    mean: float
    std: float
    n: int = Field(ge=1, le=MAX_SEEDS)
    low: float | None = None
    high: float | None = None


class Effect(_Record):
    difference: Difference
    verdict: str


class MethodValues(_Record):
    seeds: list[int] = Field(min_length=1, max_length=MAX_SEEDS)
    values: dict[str, list[float]]


class FusionResult(_Record):
    weak: str | None = None
    metric: str
    methods: dict[str, MethodValues] = Field(min_length=1)
    effects: dict[str, Effect] = {}


class ReportJson(_Record):
    kind: Literal["compare", "tuned"]
    seeds: int = Field(ge=1, le=MAX_SEEDS)
    test_size: int = Field(ge=1)
    made_under: str = ""
    provenance: ProvenanceJson | None = None
    fusion_results: dict[Literal["concat", "sum"], FusionResult] = Field(min_length=1)
    # compare
    dataset: str | None = None
    methods: list[str] | None = None
    fusions: list[Literal["concat", "sum"]] | None = None
    base: dict | None = None
    # compare --from-search: the searches' folder, relative to the report
    search_dir: str | None = None


class StudyJson(_Record):
    study_name: str = Field(min_length=1, max_length=1024)
    storage: str
    definition: dict = {}


class BestJson(_Record):
    study: str
    sampler: str
    pruner: str
    trials_complete: int = Field(ge=0)
    trial: int = Field(ge=0)
    value: float
    params: dict[str, float | int | str | bool]
    config: dict


def read_config(path: Path) -> dict:
    """config.json, checked: types and ranges of every setting (`config_schema`), then the method's own
    checks (`TrainConfig.check`), each breach one line naming the file."""
    values = read_json(path, config_schema())
    return checked_config(values, str(path))


def checked_config(values: dict, where: str) -> dict:
    """`values` (a config.json's content, also a report's `base` or a search's `config`) checked as
    `read_config` does; returns it."""
    from .config import TrainConfig
    from .methods import METHODS
    from .methods.base import is_unimodal
    validated(values, config_schema(), where)
    # a setting a file lacks (one from an earlier version) reads as its default, as TrainConfig's
    values = {**{name: copy.deepcopy(field.default) for name, field in config_schema().model_fields.items()
                 if not field.is_required()}, **values}
    if "cache" in values.get("dataset_options", {}):  # digits-av's: where it writes the built data
        raise UserError(f"{where}: dataset_options names a folder to write the dataset's cache in "
                        f"({_short(values['dataset_options']['cache'])}); milesbook writes nowhere a file names: "
                        "remove the key (datasets are cached under $MILESBOOK_CACHE)")
    method = values["method"]
    if method not in METHODS and not is_unimodal(method):
        raise UserError(f"{where}: method — unknown method {_short(method)}; {EDITED}")
    try:
        TrainConfig.from_dict(values).check()
    except UserError as error:
        raise UserError(f"{where}: {error}; {EDITED}") from None
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{where}: a method option is malformed ({printable(str(error))[:120]}); {EDITED}") from None
    return values


def read_report(folder: Path) -> dict:
    """report.json, checked: its schema, its base settings (`checked_config`), and that every row holds
    one value per seed for each cell — the seeds a re-run makes are those the report has values for."""
    path = Path(folder) / "report.json"
    report = read_json(path, ReportJson)
    if report["kind"] == "compare":
        for key in ("dataset", "methods", "fusions", "base"):
            if report.get(key) is None:
                raise UserError(f"{path}: {key} — missing (a compare report names it); {EDITED}")
        report["base"] = checked_config(report["base"], f"{path}, base")
    elif report.get("search_dir") is None:
        raise UserError(f"{path}: search_dir — missing (a tuned report names its searches' folder); {EDITED}")
    for fusion, result in report["fusion_results"].items():
        for method, entry in result["methods"].items():
            counts = {len(v) for v in entry["values"].values()} | {len(entry["seeds"])}
            if report["kind"] == "compare":
                counts.add(report["seeds"])
            if len(counts) != 1:
                raise UserError(f"{path}: fusion_results.{fusion}.methods.{printable(method)} — its seeds and values "
                                f"disagree in number ({sorted(counts)}; the report says {report['seeds']} seeds); {EDITED}")
    return report


def read_best(path: Path) -> dict:
    """A search's best.json, with its `config` checked as a config.json is."""
    record = read_json(path, BestJson)
    record["config"] = checked_config(record["config"], f"{path}, config")
    return record


# -- writing inside a folder you were handed -------------------------------------------------------

def refuse_link(path: Path, kind: str = "file") -> None:
    """Refuse, before anything is done, a member of a run, report or search folder that milesbook is
    about to delete, move, repair or write when it is a symbolic link or neither a regular file nor a
    folder (`kind`: "file" or "folder" — what it must be if it exists)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise UserError(f"{path} is a symbolic link: refused — milesbook deletes, moves and writes nothing through a "
                        "link, so nothing outside the folder you named is touched; replace the link by a copy, or "
                        "use another folder")
    if (kind == "folder" and not stat.S_ISDIR(mode)) or (kind == "file" and not stat.S_ISREG(mode)):
        raise UserError(f"{path} should be a {'folder' if kind == 'folder' else 'regular file'} but is not "
                        f"(a {'file' if stat.S_ISREG(mode) else 'folder' if stat.S_ISDIR(mode) else 'FIFO, socket or device'}): "
                        "refused, nothing was changed; remove it, or use another folder")


def no_links_below(root: Path, path: Path) -> None:
    """Every folder from `root` (exclusive: you named it, a link there is your choice) down to `path`
    (inclusive) is a real folder, not a link: writing in `path` stays inside `root`."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return
    here = root
    for part in parts:
        here = here / part
        refuse_link(here, "folder")


def check_run_members(folder: Path, files: tuple[str, ...], candidates: str) -> None:
    """A run folder's `files` and the files in its `candidates` folder are real files (or absent), not
    links, FIFOs or devices. (The names are the caller's, `runs`, which imports this module.)"""
    folder = Path(folder)
    for name in files:
        refuse_link(folder / name, "file")
    refuse_link(folder / candidates, "folder")
    if (folder / candidates).is_dir():
        for member in (folder / candidates).iterdir():
            refuse_link(member, "file")


# -- nothing named in a file is imported ------------------------------------------------------------

def factory_kinds(spec: str) -> dict[str, str]:
    """The encoders of an `--encoder` value that are your own code, {modality (or "*" for all): 
    "package.module:factory"}; torchvision and the built-in kinds are not code of yours."""
    items = [item.partition("=")[::2] for item in spec.split(",")] if "=" in spec else [("*", spec)]
    return {m.strip(): kind.strip() for m, kind in items
            if ":" in kind and not kind.strip().startswith("torchvision:")}


def refuse_imports(encoder: str, where: str, given: str | None) -> None:
    """A handed run, report or search whose `encoder` setting names your own code (a factory): refused
    unless you pass the same `--encoder` yourself — milesbook imports nothing a file names."""
    named = factory_kinds(encoder)
    if not named:
        return
    if given is None:
        raise UserError(f"{where} names encoder code to import ({printable(encoder)}); milesbook imports nothing a "
                        f"file you were handed names: if you trust that code, pass --encoder {printable(encoder)} "
                        "yourself (it imports and runs it)")
    if factory_kinds(given) != named:
        raise UserError(f"--encoder {printable(given)} does not name the encoders {where} was trained with "
                        f"({printable(encoder)}); pass --encoder {printable(encoder)}")


# -- printing what a file says ----------------------------------------------------------------------

def printable(text: str) -> str:
    """`text` with control characters (a terminal's escape codes, newlines) shown escaped."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
