"""Your own paired data: a folder of `.npy` files (or one `.npz`), or arrays in memory.

The on-disk format, readable by every command as `--dataset PATH` (numpy alone writes it):

    <modality>.npy  one per modality, shape (N, ...): float32/float64/float16/uint8 values — (N, D)
                    vectors, (N, C, H, W) images, (N, H, W) single-channel images — or int64 token
                    ids (N, L), which get a bag-of-words encoder under `--encoder auto`
    labels.npy      (N,) integer class ids, or (N, C) 0/1 for a multi-label task
    split.npy       optional, (N,): 0 = train, 1 = val, 2 = test, or the strings "train"/"val"/"test"
                    (fixed-width, never an object array, which would need pickle); without it a seeded
                    stratified 70/15/15 split
    meta.json       optional: {"name", "class_names", "task" ("multiclass"/"multilabel"),
                    "normalize": {modality: [mean, std]} or false, "vocab_size": {modality: V}}

Modality names are the file names. Arrays are memory-mapped (`mmap_mode="r"`) and each split reads
its rows only when a batch asks for them (`Rows`), so a folder larger than memory trains (on a GPU a
split is copied to the device). Without "normalize", every value modality is standardized with the
training split's mean and std. Every check names the file and the fault in one line.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .registry import SPLITS, MultimodalDataset, Split

RESERVED = ("labels", "split")
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
        read = {name: _checked_load(lambda p=p: np.load(p, mmap_mode="r", allow_pickle=False), str(p))
                for name, p in files.items()}
        meta_file = path / "meta.json"
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as bundle:  # an .npz cannot be memory-mapped: read whole
                read = {name: _checked_load(lambda n=name: bundle[n], f"{path.name}[{name}]") for name in bundle.files}
        except (OSError, ValueError, EOFError) as error:
            raise UserError(f"{path} is not a readable .npz file ({_first_line(error)}); write it with numpy.savez") from None
        meta_file = path.with_suffix(".json")
    else:
        raise UserError(f"--dataset {path}: expected a folder of .npy files or one .npz file")
    meta = _read_meta(meta_file)
    if "labels" not in read:
        raise UserError(f"{path}: no labels.npy (the class of each sample, shape (N,) or (N, C) for multi-label)")
    modalities = {name: array for name, array in read.items() if name not in RESERVED}
    return _build(modalities, read["labels"], read.get("split"), meta, seed,
                  name=meta.get("name") or path.stem, origin=f"folder {path.resolve()}",
                  where=lambda name: _file_name(path, name))


def from_arrays(modalities: dict, labels, split=None, *, task: str | None = None, name: str = "arrays",
                class_names: list[str] | None = None, normalize: dict | bool | None = None,
                vocab_size: dict | None = None, seed: int = 0) -> MultimodalDataset:
    """A dataset from arrays in memory: `modalities` {name: (N, ...) numpy array or tensor}, `labels`
    ((N,) class ids or (N, C) 0/1), `split` ((N,) 0/1/2 or "train"/"val"/"test"; None: a seeded
    stratified 70/15/15 split). The same checks and defaults as a folder (see the module docstring);
    the run records the data as given in memory, with `name` and its fingerprint."""
    def plain(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    meta = {"task": task, "class_names": class_names, "normalize": normalize, "vocab_size": vocab_size}
    return _build({m: plain(x) for m, x in modalities.items()}, plain(labels),
                  None if split is None else plain(split), {k: v for k, v in meta.items() if v is not None},
                  seed, name=name, origin="in memory", where=lambda m: f"{m} (in memory)")


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


def _read_meta(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({_first_line(error)})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} must hold one JSON object, e.g. {{\"class_names\": [...]}}")
    return meta


# -- checking and building ------------------------------------------------------------------------

def _build(modalities: dict[str, np.ndarray], labels: np.ndarray, split, meta: dict, seed: int, *,
           name: str, origin: str, where) -> MultimodalDataset:
    if len(modalities) < 1:
        raise UserError(f"{where('<modality>')}: no modality arrays; write one <modality>.npy per modality")
    n = len(labels)
    task = meta.get("task") or ("multilabel" if labels.ndim == 2 else "multiclass")
    if task not in ("multiclass", "multilabel"):
        raise UserError(f"meta.json: task must be \"multiclass\" or \"multilabel\", got {task!r}")
    labels_tensor, num_classes = _check_labels(labels, task, meta.get("class_names"), where("labels"))
    for m, x in modalities.items():
        _check_values(m, x, n, where(m))
    split_of = _split_of(split, n, where("split")) if split is not None else \
        _default_split(labels_tensor, task, seed)
    index = {s: np.flatnonzero(split_of == k) for k, s in enumerate(SPLITS)}
    # Without a split file the split is ours: say so, rather than name a file that does not exist.
    shown = where("split") if split is not None else f"{where('labels')} (split 70/15/15 by class, no split file)"
    for s, rows in index.items():
        if len(rows) == 0:
            raise UserError(f"{shown}: the {s} split is empty; give each of train, val and test samples")
        if task == "multiclass":
            missing = sorted(set(range(num_classes)) - set(labels_tensor[rows].tolist()))
            if missing:
                raise UserError(f"{shown}: the {s} split has no sample of class {missing[0]}"
                                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; stratify the "
                                "split by class, or give more samples of it")
    encoder_options, normalize = {}, {}
    given = meta.get("normalize")
    for m, x in modalities.items():
        if np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8:
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


def _sample_shape(x: np.ndarray) -> tuple[int, ...]:
    """(H, W) single-channel images get their channel axis: (1, H, W)."""
    return (1, *x.shape[1:]) if x.ndim == 3 and not np.issubdtype(x.dtype, np.integer) else tuple(x.shape[1:])


def _check_labels(labels: np.ndarray, task: str, class_names, shown: str) -> tuple[torch.Tensor, int]:
    labels = np.asarray(labels)
    if task == "multilabel":
        if labels.ndim != 2 or not np.isin(labels, (0, 1)).all():
            raise UserError(f"{shown}: a multi-label task needs (N, C) 0/1 labels, got shape {labels.shape}")
        return torch.from_numpy(labels.astype(np.float32)), labels.shape[1]
    if labels.ndim != 1:
        raise UserError(f"{shown}: class ids need shape (N,), got {labels.shape} (multi-label: (N, C) 0/1 and "
                        "\"task\": \"multilabel\" in meta.json)")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.isfinite(labels)) or \
                not np.all(labels == np.round(labels)):
            raise UserError(f"{shown}: labels must be integer class ids 0..K-1, got dtype {labels.dtype}"
                            + (" with non-integer values" if np.issubdtype(labels.dtype, np.floating) else ""))
    labels = labels.astype(np.int64)
    if len(labels) == 0:
        raise UserError(f"{shown} is empty")
    low, high = int(labels.min()), int(labels.max())
    classes = len(class_names) if class_names else high + 1
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise UserError(f"{shown}: class id {bad} at sample {int(np.flatnonzero(labels == bad)[0])} is outside "
                        f"0..{classes - 1}" + (" (meta.json names that many classes)" if class_names else ""))
    return torch.from_numpy(labels), classes


def _check_values(m: str, x: np.ndarray, n: int, shown: str) -> None:
    if len(x) != n:
        raise UserError(f"{shown} has {len(x)} samples but labels.npy has {n}; every array needs one row per sample")
    if x.ndim < 2:
        raise UserError(f"{shown} has shape {x.shape}; a modality needs (N, D) vectors, (N, C, H, W) images or "
                        "(N, L) token ids")
    integer = np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8
    if integer:
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
    from .digits_av import stratified_split
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
