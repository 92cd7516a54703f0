"""Your own paired data: a folder of `.npy` files (or one `.npz`), or arrays in memory.

The on-disk format, readable by every command as `--dataset PATH` (numpy alone writes it):

    <modality>.npy  one per modality, shape (N, ...): float32/float64/float16/uint8 values — (N, D)
                    vectors, (N, C, H, W) images, (N, H, W) single-channel images — or int64 token
                    ids (N, L), which get a bag-of-words encoder under `--encoder auto`
    labels.npy      (N,) integer class ids, or (N, C) 0/1 for a multi-label task
    split.npy       optional, (N,): 0 = train, 1 = val, 2 = test, or the strings "train"/"val"/"test"
                    (fixed-width, never an object array, which would need pickle); without it a seeded
                    stratified 70/15/15 split
    meta.json       optional, checked against `Meta` (a key of the wrong type or range, or one it does
                    not know, is refused): {"name", "task" ("multiclass"/"multilabel"), "class_names",
                    "num_classes", "normalize": {modality: [mean, std > 0]} or false,
                    "vocab_size": {modality: V}}

Modality names are the file names: letters, digits, "-" and "." (`MODALITY_NAME`), not "fusion",
"labels" or "split" — a name becomes part of history.csv's columns (val_acc_<m>, val_acc_head_<m>,
u_<m>, delta_<a>_<b>), where "_" separates the parts and "fusion" is the fused model. Only regular
files are read (a link is read as the file it points to; a FIFO or a device is refused unopened).
Class ids are bounded before anything is sized by them: by meta.json's "num_classes" or
"class_names", else inferred as max + 1 and at most `MAX_INFERRED_CLASSES`.

Arrays are memory-mapped (`mmap_mode="r"`) and each split reads its rows only when a batch asks for
them (`Rows`), so a folder larger than memory trains (on a GPU a split is copied to the device);
(N, H, W) images are read as (N, 1, H, W) views of each batch. Without "normalize", every value
modality is standardized with the training split's mean and std. Every check names the file and the
fault in one line.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from ..errors import UserError
from .registry import SPLITS, MultimodalDataset, Split
from .splits import stratified_split

RESERVED = ("labels", "split")
# Not a modality's name: the files above, and "fusion" — the fused model's columns (val_acc_fusion, which
# chooses the epoch) and the fusion head's parameter group (lr_fusion).
NOT_MODALITIES = (*RESERVED, "fusion")
# A modality's name: letters (any script), digits, "-" and ".", starting with a letter or digit. No "_":
# it separates the parts of history.csv's columns (<split>_<metric>_<m>, _head_<m>, _part_<m>,
# _without_<m>, u_<m>, delta_<a>_<b>), so "head_audio" would be read as the audio head, and with "_" in
# names delta_x_y_z could be two pairs. No "," or "=" (--encoder m=kind,m2=kind) and no leading ".".
MODALITY_NAME = re.compile(r"[^\W_](?:[^\W_]|[.-])*")
MAX_INFERRED_CLASSES = 10_000  # class ids above 9,999 need meta.json's "num_classes" (or "class_names")
MAX_DECLARED_CLASSES = 1_000_000  # the heads are (feature_dim × classes): bounded even when declared
FRACTIONS = (0.7, 0.15, 0.15)
CHUNK = 4096  # rows read at once when a whole array is scanned (checks, statistics, fingerprint)
VALUE_DTYPES = (np.float32, np.float64, np.float16, np.uint8)


class Rows:
    """Rows `index` of an array (e.g. a memory-mapped `.npy`), read only when asked: what a split holds
    for one modality, standing in for the (len(index), *shape) tensor the trainer indexes.

    `rows[idx]` (a LongTensor, an int array or a slice) reads those rows as a tensor; float64 is read
    as float32. `.to("cpu")` is the rows themselves; `.to("cuda")` copies them to the device."""

    def __init__(self, array: np.ndarray, index: np.ndarray, sample_shape: tuple[int, ...] | None = None):
        self.array, self.index = array, np.asarray(index, dtype=np.int64)
        self.sample_shape = tuple(sample_shape or array.shape[1:])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.sample_shape))

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, dtype=_readable(self.array[:0]).dtype)).dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        rows = self.index[key]
        order = np.argsort(rows, kind="stable")  # read the file forwards, then put the rows back in order
        values = np.empty((len(rows), *self.array.shape[1:]), dtype=self.array.dtype)
        values[order] = self.array[rows[order]]
        return torch.from_numpy(_readable(values)).reshape(len(rows), *self.sample_shape)

    def subset(self, index) -> "Rows":
        """The rows at positions `index` of these rows, still unread."""
        index = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return Rows(self.array, self.index[index], self.sample_shape)

    def chunks(self):
        """The rows in order, `CHUNK` at a time, as tensors."""
        for start in range(0, len(self), CHUNK):
            yield self[slice(start, start + CHUNK)]

    def to(self, device) -> "Rows | torch.Tensor":
        if torch.device(device).type == "cpu":
            return self
        return torch.cat(list(self.chunks())).to(device)

    def mapped_file(self) -> str | None:
        """The file these rows read, when the array is a read-only memory map of the whole `.npy` (what
        `from_folder` makes): nothing in this process can write through it, so its bytes change only
        with the file (`provenance.data_fingerprint` watches the file's size, mtime and ctime). None for
        an array in memory, a writable or copy-on-write map, or a view of a map."""
        array = self.array
        if isinstance(array, np.memmap) and array.mode == "r" and array.filename and \
                array.base is getattr(array, "_mmap", None) is not None:
            return str(array.filename)
        return None


def _readable(values: np.ndarray) -> np.ndarray:
    """What the trainer takes: float64 as float32, int32 token ids as int64; the rest as stored."""
    if values.dtype == np.float64:
        return values.astype(np.float32)
    if values.dtype == np.int32:
        return values.astype(np.int64)
    return values


def from_folder(path, seed: int = 0) -> MultimodalDataset:
    """The dataset in a folder of `.npy` files (or one `.npz`) in the format above; every file checked."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--dataset {path}: no such folder or file; give a folder of <modality>.npy + labels.npy "
                        "(or a registered name: milesbook datasets)")
    if path.is_dir():
        files = {p.stem: p for p in sorted(path.glob("*.npy"))}
        meta_file = path / "meta.json"
        for p in [*files.values(), meta_file]:  # every member checked before any is opened
            if p is not meta_file or os.path.lexists(p):
                _check_regular(p)
        read = {name: _checked_load(lambda p=p: np.load(p, mmap_mode="r", allow_pickle=False), str(p))
                for name, p in files.items()}
    elif path.suffix == ".npz":
        meta_file = path.with_suffix(".json")
        for p in (path, meta_file):
            if p is path or os.path.lexists(p):
                _check_regular(p)
        try:
            with np.load(path, allow_pickle=False) as bundle:  # an .npz cannot be memory-mapped: read whole
                read = {name: _checked_load(lambda n=name: bundle[n], f"{path.name}[{name}]") for name in bundle.files}
        except (OSError, ValueError, EOFError) as error:
            raise UserError(f"{path} is not a readable .npz file ({_first_line(error)}); write it with numpy.savez") from None
    else:
        raise UserError(f"--dataset {path}: expected a folder of .npy files or one .npz file")
    meta = _read_meta(meta_file)
    if "labels" not in read:
        raise UserError(f"{path}: no labels.npy (the class of each sample, shape (N,) or (N, C) for multi-label)")
    modalities = {name: array for name, array in read.items() if name not in RESERVED}
    return _build(modalities, read["labels"], read.get("split"), meta, seed,
                  name=meta.get("name") or path.stem, origin=f"folder {path.resolve()}",
                  where=lambda name: _file_name(path, name), meta_shown=str(meta_file))


def from_arrays(modalities: dict, labels, split=None, *, task: str | None = None, name: str = "arrays",
                class_names: list[str] | None = None, normalize: dict | bool | None = None,
                vocab_size: dict | None = None, seed: int = 0) -> MultimodalDataset:
    """A dataset from arrays in memory: `modalities` {name: (N, ...) numpy array or tensor}, `labels`
    ((N,) class ids or (N, C) 0/1), `split` ((N,) 0/1/2 or "train"/"val"/"test"; None: a seeded
    stratified 70/15/15 split). The same checks and defaults as a folder (see the module docstring);
    the run records the data as given in memory, with `name` and its fingerprint."""
    def plain(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    meta = {"name": name, "task": task, "class_names": class_names, "normalize": normalize, "vocab_size": vocab_size}
    meta = _checked_meta(_as_json({k: v for k, v in meta.items() if v is not None}), "from_arrays")
    return _build({m: plain(x) for m, x in modalities.items()}, plain(labels),
                  None if split is None else plain(split), meta,
                  seed, name=name, origin="in memory", where=lambda m: f"{m} (in memory)", meta_shown="from_arrays")


# -- reading -----------------------------------------------------------------------------------------

def _file_name(folder: Path, name: str) -> str:
    return f"{folder / name}.npy" if folder.is_dir() else f"{folder}[{name}]"


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _checked_load(load, shown: str) -> np.ndarray:
    try:
        return load()
    except ValueError as error:
        if any(sign in str(error) for sign in ("allow_pickle", "Object arrays", "Python objects")):
            raise UserError(f"{shown} holds Python objects, which only pickle can read (and pickle can run "
                            "code); save a numeric or fixed-width string array instead") from None
        raise UserError(f"{shown} is not a readable .npy array ({_first_line(error)}); write it with numpy.save") from None
    except (OSError, EOFError) as error:
        raise UserError(f"{shown} is not a readable .npy array ({_first_line(error)}); write it with numpy.save") from None


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


def _check_regular(path: Path) -> None:
    """Refuse, unopened, anything but a regular file: opening a FIFO blocks until a writer comes, and a
    device never ends. A symbolic link is read as what it points to (a folder assembled from links to
    files kept elsewhere is fine; milesbook only reads them), so its target is what is checked."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except FileNotFoundError:
        if os.path.islink(path):
            raise UserError(f"{path} is a link to {os.readlink(path)}, which does not exist; remove the link or "
                            "put the file back") from None
        raise UserError(f"{path}: no such file") from None
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror or type(error).__name__})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        via = f", reached through the link to {os.path.realpath(path)}" if os.path.islink(path) else ""
        raise UserError(f"{path} is not a regular file ({kind}{via}); milesbook reads only regular files, so it "
                        "was not opened: put the array there as a file written by numpy.save")


def _read_meta(path: Path) -> dict:
    if not os.path.lexists(path):
        return {}
    try:
        text = path.read_text()
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({_first_line(error)})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} must hold one JSON object, e.g. {{\"class_names\": [...]}}")
    return _checked_meta(text, str(path))


Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_AS_STORED, _PER_MODALITY = "<false>", "<per modality>"  # the two forms of "normalize" (not in error messages)
Normalize = Annotated[Union[Annotated[Literal[False], Tag(_AS_STORED)],
                            Annotated[dict[str, tuple[Finite, Positive]], Tag(_PER_MODALITY)]],
                      Discriminator(lambda value: _AS_STORED if value is False else _PER_MODALITY)]


class Meta(BaseModel):
    """meta.json (and `from_arrays`'s options): every key optional, of exactly this type and range (strict:
    "3" is not 3, true is not 1); a key not declared here is refused, so a misspelt one is not ignored."""
    model_config = ConfigDict(strict=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^/\\]+$")] | None = None
    task: Literal["multiclass", "multilabel"] | None = None
    class_names: Annotated[list[Annotated[str, Field(min_length=1)]],
                           Field(min_length=1, max_length=MAX_DECLARED_CLASSES)] | None = None
    num_classes: Annotated[int, Field(ge=1, le=MAX_DECLARED_CLASSES)] | None = None
    normalize: Normalize | None = None  # false: every modality as stored; {m: [mean, std]}: those modalities
    vocab_size: dict[str, Annotated[int, Field(ge=1)]] | None = None


_META_HINTS = {
    "name": "a non-empty name without \"/\"",
    "task": "\"multiclass\" or \"multilabel\"",
    "class_names": "a list of distinct non-empty strings, one per class id 0..K-1",
    "num_classes": f"the number of classes K (class ids 0..K-1), an integer 1..{MAX_DECLARED_CLASSES}",
    "normalize": "{\"<modality>\": [mean, std]} with std > 0, or false to use the values as stored",
    "vocab_size": "{\"<token modality>\": V} with V above every token id",
}


def _checked_meta(text: str, shown: str) -> dict:
    """The keys of a meta.json text (or `from_arrays`'s options as JSON) that are set, checked against
    `Meta`; any breach is one line naming `shown` and the key."""
    try:
        meta = Meta.model_validate_json(text)
    except ValidationError as error:
        problem = error.errors()[0]
        loc = [k for i, k in enumerate(problem["loc"]) if i != 1 or k not in (_AS_STORED, _PER_MODALITY)]
        key = "".join(f"[{k}]" if isinstance(k, int) else (" (a key)" if k == "[key]" else f".{k}")
                      for k in loc).lstrip(".")
        if problem["type"] == "extra_forbidden":
            raise UserError(f"{shown}: unknown key {json.dumps(key)}; the keys are {', '.join(Meta.model_fields)}") from None
        what = problem["msg"].replace(" after validation", "").replace("Tuple", "Array").replace("List", "Array")
        got = json.dumps(problem.get("input"), default=str)
        got = got if len(got) <= 60 else got[:57] + "..."
        hint = _META_HINTS.get(str(loc[0]), "")
        raise UserError(f"{shown}: {key}: {what[:1].lower()}{what[1:]} (got {got})"
                        + (f"; {loc[0]} is {hint}" if hint else "")) from None
    names = meta.class_names or []
    if len(set(names)) < len(names):
        twice = next(n for i, n in enumerate(names) if n in names[:i])
        raise UserError(f"{shown}: class_names: {json.dumps(twice)} is named twice; {_META_HINTS['class_names']}")
    if meta.class_names is not None and meta.num_classes is not None and meta.num_classes != len(names):
        raise UserError(f"{shown}: num_classes: {meta.num_classes}, but class_names names {len(names)} classes; "
                        "give one, or make them agree")
    return meta.model_dump(exclude_none=True)


def _as_json(options: dict) -> str:
    """`from_arrays`'s options as the JSON meta.json would hold (tuples as lists, numpy numbers as numbers),
    so that they meet the same checks."""
    def plain(x):
        if isinstance(x, (np.generic, np.ndarray)) or isinstance(x, torch.Tensor):
            return x.tolist()
        raise TypeError
    try:
        return json.dumps(options, default=plain, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise UserError(f"from_arrays: an option is not plain data ({_first_line(error)}); give numbers, strings, "
                        "lists and dicts") from None


# -- checking and building ------------------------------------------------------------------------

def _build(modalities: dict[str, np.ndarray], labels: np.ndarray, split, meta: dict, seed: int, *,
           name: str, origin: str, where, meta_shown: str) -> MultimodalDataset:
    """`meta`: checked by `Meta` already (`_checked_meta`); what it says about the arrays is checked here."""
    if len(modalities) < 1:
        raise UserError(f"{where('<modality>')}: no modality arrays; write one <modality>.npy per modality")
    for m in modalities:
        _check_name(m, where(m))
    n = len(labels)
    task = meta.get("task") or ("multilabel" if labels.ndim == 2 else "multiclass")
    declared = meta.get("num_classes") or len(meta.get("class_names") or ()) or None
    how = "names that many classes" if meta.get("class_names") else f"declares {declared} classes"
    if meta_shown == "from_arrays":
        how = "names that many classes"  # from_arrays has no num_classes
    source = "from_arrays(class_names=…)" if meta_shown == "from_arrays" else Path(meta_shown).name
    labels_tensor, num_classes = _check_labels(labels, task, declared, where("labels"), f"{source} {how}")
    for m, x in modalities.items():
        _check_values(m, x, n, where(m))
    _check_meta_against(meta, modalities, meta_shown, where)
    split_of = _split_of(split, n, where("split")) if split is not None else \
        _default_split(labels_tensor, task, seed)
    index = {s: np.flatnonzero(split_of == k) for k, s in enumerate(SPLITS)}
    # Without a split file the split is ours: say so, rather than name a file that does not exist.
    shown = where("split") if split is not None else f"{where('labels')} (split 70/15/15 by class, no split file)"
    for s, rows in index.items():
        if len(rows) == 0:
            raise UserError(f"{shown}: the {s} split is empty; give each of train, val and test samples")
        if task == "multiclass":  # num_classes is bounded (`_check_labels`): so is this count
            missing = np.flatnonzero(np.bincount(labels_tensor[rows].numpy(), minlength=num_classes) == 0)
            if len(missing):
                raise UserError(f"{shown}: the {s} split has no sample of class {missing[0]}"
                                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; stratify the "
                                "split by class, or give more samples of it")
    encoder_options, normalize = {}, {}
    given = meta.get("normalize")
    for m, x in modalities.items():
        if _tokens(x):
            vocab = (meta.get("vocab_size") or {}).get(m) or _max(x) + 1
            encoder_options[m] = {"tokens": True, "vocab_size": int(vocab), "kind": "bow"}
        elif given is None:
            normalize[m] = _mean_std(Rows(x, index["train"]))
        elif given is not False and m in given:
            normalize[m] = tuple(float(v) for v in given[m])
    splits = {s: Split({m: Rows(x, rows, _sample_shape(x)) for m, x in modalities.items()}, labels_tensor[rows])
              for s, rows in index.items()}
    return MultimodalDataset(name=name, modalities=tuple(modalities), num_classes=num_classes, splits=splits,
                             task=task, normalize=normalize, encoder_options=encoder_options,
                             description=f"your data: {', '.join(modalities)}, {n} samples ({origin})",
                             origin=origin)


def _tokens(x: np.ndarray) -> bool:
    """Integer arrays other than uint8 pixels hold token ids."""
    return np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8


def _sample_shape(x: np.ndarray) -> tuple[int, ...]:
    """(H, W) single-channel images — float or uint8 — get their channel axis: (1, H, W). `Rows` reads a
    batch as stored and reshapes it, a view: nothing else is copied. (Token ids are (N, L), never 3-D.)"""
    return (1, *x.shape[1:]) if x.ndim == 3 and not _tokens(x) else tuple(x.shape[1:])


def _check_name(m: str, shown: str) -> None:
    if MODALITY_NAME.fullmatch(m) and m.casefold() not in NOT_MODALITIES:
        return
    suggestion = re.sub(r"[^\w.-]|_", "-", m).strip("-.") or "modality"
    if suggestion.casefold() in NOT_MODALITIES:
        suggestion += "-input"
    raise UserError(f"{shown}: modality name {m!r} is not allowed: a modality's name is part of history.csv's "
                    "columns (val_acc_<m>, val_acc_head_<m>, u_<m>, delta_<a>_<b>), where \"_\" separates the parts "
                    "and \"fusion\" is the fused model, so it holds letters, digits, \"-\" and \".\" only, starts with a letter or digit, "
                    f"and is not fusion, labels or split; rename it, e.g. {suggestion!r}")


def _check_meta_against(meta: dict, modalities: dict, shown: str, where) -> None:
    """What meta.json says per modality must fit the arrays: a known modality, token ids for
    "vocab_size" (above every id), values for "normalize"."""
    for key in ("normalize", "vocab_size"):
        for m in meta.get(key) or {}:
            if m not in modalities:
                raise UserError(f"{shown}: {key}.{m}: no modality {m}; the modalities are {', '.join(modalities)}")
    for m, vocab in (meta.get("vocab_size") or {}).items():
        if not _tokens(modalities[m]):
            raise UserError(f"{shown}: vocab_size.{m}: {m} holds values, not token ids; vocab_size is for int64 "
                            "token-id modalities (leave it out for this one)")
        top = int(_max(modalities[m]))
        if vocab <= top:
            raise UserError(f"{shown}: vocab_size.{m}: {vocab}, but {where(m)} holds token id {top}; it must be "
                            f"above every id (at least {top + 1}), or leave it out to infer it")
    for m in meta.get("normalize") or {}:
        if _tokens(modalities[m]):
            raise UserError(f"{shown}: normalize.{m}: {m} holds token ids, which are not normalized; leave it out "
                            "of normalize")


def _shown_id(value) -> str:
    return f"{float(value):g}" if np.issubdtype(np.asarray(value).dtype, np.floating) else str(int(value))


def _check_labels(labels: np.ndarray, task: str, declared: int | None, shown: str,
                  why: str) -> tuple[torch.Tensor, int]:
    """Class ids and their number: `declared` (meta.json's num_classes or class_names; `why` says so),
    else max + 1 of at most `MAX_INFERRED_CLASSES`. Checked before anything is sized by the ids."""
    labels = np.asarray(labels)
    if task == "multilabel":
        if labels.ndim != 2 or not np.isin(labels, (0, 1)).all():
            raise UserError(f"{shown}: a multi-label task needs (N, C) 0/1 labels, got shape {labels.shape}")
        if declared is not None and declared != labels.shape[1]:
            raise UserError(f"{shown}: {labels.shape[1]} classes (columns), but {why.replace('that many', str(declared))}")
        return torch.from_numpy(labels.astype(np.float32)), labels.shape[1]
    if labels.ndim != 1:
        raise UserError(f"{shown}: class ids need shape (N,), got {labels.shape} (multi-label: (N, C) 0/1 and "
                        "\"task\": \"multilabel\" in meta.json)")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.isfinite(labels)) or \
                not np.all(labels == np.round(labels)):
            raise UserError(f"{shown}: labels must be integer class ids 0..K-1, got dtype {labels.dtype}"
                            + (" with non-integer values" if np.issubdtype(labels.dtype, np.floating) else ""))
    if len(labels) == 0:
        raise UserError(f"{shown} is empty")
    low, high = labels.min(), labels.max()  # in the stored dtype: 1e30 or 2**63 are not wrapped by a cast

    def sample(bad) -> int:
        return int(np.flatnonzero(labels == bad)[0])
    if declared is None and high >= MAX_INFERRED_CLASSES:
        raise UserError(f"{shown}: class id {_shown_id(high)} at sample {sample(high)} is above "
                        f"{MAX_INFERRED_CLASSES - 1}, the most classes milesbook infers from the labels alone; "
                        "if there are that many classes, declare them in meta.json (\"num_classes\": K, or "
                        "\"class_names\": [...]), else renumber the classes 0..K-1")
    classes = declared if declared is not None else int(high) + 1
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise UserError(f"{shown}: class id {_shown_id(bad)} at sample {sample(bad)} is outside "
                        f"0..{classes - 1}" + (f" ({why})" if declared is not None else ""))
    return torch.from_numpy(labels.astype(np.int64)), classes


def _check_values(m: str, x: np.ndarray, n: int, shown: str) -> None:
    if len(x) != n:
        raise UserError(f"{shown} has {len(x)} samples but labels.npy has {n}; every array needs one row per sample")
    if x.ndim < 2:
        raise UserError(f"{shown} has shape {x.shape}; a modality needs (N, D) vectors, (N, C, H, W) images or "
                        "(N, L) token ids")
    if _tokens(x):
        if x.dtype != np.int64 and x.dtype != np.int32:
            raise UserError(f"{shown}: token ids must be int64 (or int32), got {x.dtype}")
        if x.ndim != 2 or _min(x) < 0:
            raise UserError(f"{shown}: token ids must be (N, L) and ≥ 0")
        return
    if x.dtype.type not in VALUE_DTYPES:
        raise UserError(f"{shown}: dtype {x.dtype} is not supported; use float32, float64, float16, uint8 or "
                        "int64 token ids")
    if x.dtype != np.uint8:
        for start in range(0, len(x), CHUNK):
            finite = np.isfinite(x[start:start + CHUNK])
            if not finite.all():
                first = start + int(np.flatnonzero(~finite.reshape(len(finite), -1).all(1))[0])
                raise UserError(f"{shown} holds NaN or inf (first at sample {first}); clean or drop those samples")


def _split_of(split, n: int, shown: str) -> np.ndarray:
    split = np.asarray(split)
    if split.shape != (n,):
        raise UserError(f"{shown} has shape {split.shape}; it needs one value per sample, ({n},)")
    if split.dtype.kind in "US":
        text = split.astype(str)
        bad = ~np.isin(text, SPLITS)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise UserError(f"{shown}: sample {k} is {str(text[k])!r}; use \"train\", \"val\" or \"test\" (or 0, 1, 2)")
        return np.select([text == s for s in SPLITS], [0, 1, 2])
    if not np.issubdtype(split.dtype, np.integer):
        raise UserError(f"{shown}: dtype {split.dtype}; use integers 0 = train, 1 = val, 2 = test, or those words")
    bad = ~np.isin(split, (0, 1, 2))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise UserError(f"{shown}: sample {k} is {split[k]}; use 0 = train, 1 = val, 2 = test")
    return split.astype(np.int64)


def _default_split(labels: torch.Tensor, task: str, seed: int) -> np.ndarray:
    """A seeded 70/15/15 split, stratified by class on single-label data."""
    rng = np.random.default_rng(seed)
    values = labels.numpy()
    split_of = np.empty(len(values), dtype=np.int64)
    if task == "multiclass":
        parts = stratified_split(values, FRACTIONS, rng)
    else:
        order = rng.permutation(len(values))
        cut = np.cumsum([round(f * len(values)) for f in FRACTIONS[:2]])
        parts = np.split(order, cut)
    for k, rows in enumerate(parts):
        split_of[rows] = k
    return split_of


def _min(x: np.ndarray):
    return min(x[s:s + CHUNK].min() for s in range(0, len(x), CHUNK))


def _max(x: np.ndarray):
    return max(x[s:s + CHUNK].max() for s in range(0, len(x), CHUNK))


def _mean_std(rows: Rows) -> tuple[float, float]:
    """Mean and std of every value of `rows` (float64 sums, a chunk at a time)."""
    total = square = count = 0.0
    for chunk in rows.chunks():
        values = chunk.double()
        total, square, count = total + values.sum().item(), square + (values ** 2).sum().item(), count + values.numel()
    mean = total / count
    std = math.sqrt(max(square / count - mean ** 2, 0.0))
    return mean, std if std > 0 else 1.0
