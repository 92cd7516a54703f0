"""S-MNIST — "Written and spoken digits database for multimodal learning" (Khacef, Rodriguez &
Miramond; Zenodo, concept DOI 10.5281/zenodo.3515934): download, prepare, load.

The source is six NumPy files: MNIST pixels (N, 784), spoken-digit MFCCs from Google Speech Commands
(N, 507 = 39 frames × 13), and labels 0–9, already paired by class (spoken rows duplicated to reach
60,000 / 10,000). The MILES paper's protocol, which `prepare` builds: 8,000 training and 2,000
validation pairs sampled from the training files and 2,000 test pairs from the test files (fixed
seed), both modalities as 1×28×28 (the 39×13 MFCC map resized bilinearly), ResNet-10 encoders, 50
epochs. Each modality is scaled by its training sample's mean and std.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import prepare as common
from .registry import SPLITS, MultimodalDataset, register
from .download import download, fetch_json
from ..errors import UserError

NAME = "smnist"
TITLE = "S-MNIST (Khacef, Rodriguez & Miramond)"
LICENCE = "as stated on the Zenodo record (printed when downloading); sources MNIST and Speech Commands (CC BY 4.0)"
RECORD = "4452953"  # version 2 of the Zenodo record (version 1 is 3515935)
FILES = ("data_wr_train.npy", "data_wr_test.npy", "data_sp_train.npy", "data_sp_test.npy",
         "labels_train.npy", "labels_test.npy")
SHAPES = {"wr": 784, "sp": 507}
PROTOCOL_SIZES = (8000, 2000, 2000)
LAYOUT = common.Layout({"image": ((1, 28, 28), "float32"), "audio": ((1, 28, 28), "float32")}, 10, row_id="index")
CITATION = ("L. Khacef, L. Rodriguez, B. Miramond, \"Written and spoken digits database for multimodal "
            "learning\", Zenodo, 2020, doi:10.5281/zenodo.4452953. Sources: MNIST (LeCun et al.) and Google "
            "Speech Commands v0.02 (Warden, CC BY 4.0).")
SCRIPT = "python data_scripts/smnist.py"


def root() -> Path:
    return common.root("smnist")


def prepared_path(folder: Path | None = None) -> Path:
    return Path(folder or root()) / "prepared.npz"


def is_prepared(folder: Path | None = None) -> bool:
    """Prepared means the marker written after the arrays exists (a half-written cache has none)."""
    return common.is_prepared(folder or root())


def record_metadata(record: str = RECORD) -> dict:
    """Sizes, md5s, download links and licence of the Zenodo record, read from its API."""
    meta = fetch_json(f"https://zenodo.org/api/records/{record}")
    files = {f["key"]: {"size": f["size"], "md5": f["checksum"].removeprefix("md5:"), "url": f["links"]["self"]}
             for f in meta["files"]}
    licence = (meta.get("metadata", {}).get("license") or {}).get("id", "see the record")
    return {"files": files, "licence": licence}


def fetch(folder: Path, source: Path | None = None, progress: bool = True) -> dict:
    """Put the six raw files in `folder/raw`: copied from `source` (--from DIR) or downloaded from
    Zenodo (resuming, verified against the record's sizes and md5s). Returns the source and how each
    file was verified."""
    raw = Path(folder) / "raw"
    if source is not None:
        common.copy_from(source, raw, common.without_copies(source, FILES), "the six S-MNIST .npy files")
        how = common.FROM_UNCHECKED + " (Zenodo's md5s need the network); shapes, labels and values checked"
        return {"source": str(source), "verified": {name: how for name in FILES}, common.RAW_FILES: FILES}
    meta = record_metadata()
    print(f"S-MNIST licence (from the Zenodo record): {meta['licence']}")
    total = sum(meta["files"][n]["size"] for n in FILES)
    print(f"downloading {len(FILES)} files, {total / 1e6:.0f} MB, into {raw}")
    for name in FILES:
        info = meta["files"][name]
        download(info["url"], raw / name, info["size"], info["md5"], progress)
    return {"source": f"zenodo record {RECORD}", "licence": meta["licence"],
            "verified": {n: f"size and md5 {meta['files'][n]['md5']} from Zenodo record {RECORD}" for n in FILES},
            common.RAW_FILES: FILES}


NPY_MAGIC = b"\x93NUMPY"


def _load_raw(raw: Path, name: str) -> np.ndarray:
    """A raw file as a memory-mapped array. A file without the .npy signature (an HTML error page saved
    under the file's name, say) is named as such: NumPy's own error would suggest allow_pickle, which
    would run whatever a crafted file holds."""
    path = raw / name
    try:
        with open(path, "rb") as f:
            start = f.read(64)
        if not start.startswith(NPY_MAGIC):
            page = b"<html" in start.lower() or b"<!doctype" in start.lower()
            raise common.damaged(path, f"not a NumPy .npy file: it starts with {start[:16]!r}"
                                       + (" — a web page saved under the file's name" if page else ""), SCRIPT)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            error = "it holds Python objects, where S-MNIST's files hold numbers"
        raise common.damaged(path, f"not a NumPy file of numbers: {error}", SCRIPT) from None
    except (OSError, EOFError) as error:
        raise common.damaged(path, f"not a NumPy file: {error}", SCRIPT) from None


def _labels(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 10:  # one-hot
        array = array.argmax(1)
    if array.ndim != 1 and not (array.ndim == 2 and array.shape[1] == 1):
        raise common.damaged(path, f"labels of shape {array.shape}, expected (N,) or one-hot (N, 10)", SCRIPT)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise common.damaged(path, "non-finite labels", SCRIPT)
    array = array.reshape(-1).astype(np.int64)
    if len(array) and (array.min() < 0 or array.max() > 9):
        raise common.damaged(path, f"labels outside 0–9 (min {array.min()}, max {array.max()})", SCRIPT)
    return array


def _check_finite(array: np.ndarray, path: Path, chunk: int = 4096) -> None:
    """Refuse NaN or infinite values (damage, never data), reading a memory-mapped file in chunks."""
    if array.dtype.kind not in "fc":
        return
    for start in range(0, len(array), chunk):
        bad = ~np.isfinite(array[start:start + chunk])
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=tuple(range(1, bad.ndim))))[0])
            raise common.damaged(path, f"non-finite values (NaN or infinity) from row {row}", SCRIPT)


def _check_part(raw: Path, part: str, written: np.ndarray, spoken: np.ndarray, labels: np.ndarray) -> None:
    """Each data file is (N, width) with the N of its labels; name the file that disagrees."""
    files = {f"data_wr_{part}.npy": written, f"data_sp_{part}.npy": spoken}
    for name, array in files.items():
        width = SHAPES[name.split("_")[1]]
        if array.ndim != 2 or array.shape[1] != width:
            raise UserError(f"{raw / name} has shape {array.shape}; expected ({len(labels)}, {width}) — not the "
                            f"S-MNIST file, or damaged: {common.remedy(raw / name, SCRIPT)}")
    rows = {**{name: len(array) for name, array in files.items()}, f"labels_{part}.npy": len(labels)}
    agreed, votes = Counter(rows.values()).most_common(1)[0]
    if votes == 3:
        return
    if votes == 2:  # two files agree: the third is the odd one
        name = next(name for name, count in rows.items() if count != agreed)
        others = " and ".join(n for n in rows if n != name)
        raise common.damaged(raw / name, f"{rows[name]} rows where {others} have {agreed}", SCRIPT)
    found = ", ".join(f"{raw / name} {count}" for name, count in rows.items())
    raise UserError(f"S-MNIST {part} files disagree on their number of rows ({found}): not one release; replace "
                    f"them and re-run {SCRIPT}")


def build(raw: Path, sizes=PROTOCOL_SIZES, seed: int = 0) -> dict[str, np.ndarray]:
    """The protocol arrays from the six raw files (see the module docstring)."""
    raw = Path(raw)
    arrays = {}
    for part in ("train", "test"):
        written, spoken = _load_raw(raw, f"data_wr_{part}.npy"), _load_raw(raw, f"data_sp_{part}.npy")
        labels = _labels(_load_raw(raw, f"labels_{part}.npy"), raw / f"labels_{part}.npy")
        _check_part(raw, part, written, spoken, labels)
        _check_finite(written, raw / f"data_wr_{part}.npy")
        _check_finite(spoken, raw / f"data_sp_{part}.npy")
        arrays[part] = (written, spoken, labels)
    rng = np.random.default_rng(seed)
    n_train, n_val, n_test = sizes
    found_train, found_test = len(arrays["train"][2]), len(arrays["test"][2])
    if n_train + n_val > found_train or n_test > found_test:
        raise UserError(f"S-MNIST files are too small for {tuple(sizes)} samples: {raw} holds {found_train} "
                        f"training rows (needs {n_train + n_val}) and {found_test} test rows (needs {n_test}) — "
                        f"not the complete release (60,000 / 10,000 rows): use its files and re-run {SCRIPT}")
    order = rng.permutation(found_train)
    picks = {"train": ("train", np.sort(order[:n_train])), "val": ("train", np.sort(order[n_train:n_train + n_val])),
             "test": ("test", np.sort(rng.permutation(found_test)[:n_test]))}
    out = {}
    for split, (part, index) in picks.items():
        written, spoken, labels = arrays[part]
        image = np.asarray(written[index], dtype=np.float32).reshape(-1, 1, 28, 28)
        audio = torch.from_numpy(np.asarray(spoken[index], dtype=np.float32).reshape(-1, 1, 39, 13))
        audio = F.interpolate(audio, size=(28, 28), mode="bilinear", align_corners=False).numpy()
        out[f"{split}_image"], out[f"{split}_audio"], out[f"{split}_labels"] = image, audio, labels[index]
        out[f"{split}_index"] = index
    for m in ("image", "audio"):  # scale with the training sample's statistics only
        mean, std = out[f"train_{m}"].mean(), out[f"train_{m}"].std() + 1e-8
        for split in SPLITS:
            out[f"{split}_{m}"] = ((out[f"{split}_{m}"] - mean) / std).astype(np.float32)
    return out


def prepare(folder: Path | None = None, source: Path | None = None, seed: int = 0, sizes=PROTOCOL_SIZES,
            progress: bool = True) -> Path:
    """Fetch (or copy) the raw files, build the protocol arrays, write them, and only then the
    `prepared.json` marker. Safe to re-run: verified raw files are not fetched again."""
    folder = Path(folder or root())
    return common.run("S-MNIST", folder, lambda: fetch(folder, source, progress),
                      lambda: (build(folder / "raw", sizes, seed), {}), LAYOUT, SCRIPT, {"seed": seed})


@register("smnist", ("image", "audio"), "S-MNIST: MNIST + spoken digits (Zenodo), 8k/2k/2k protocol",
          prepared=is_prepared, data_script=SCRIPT,
          protocol={"encoder": "resnet10", "epochs": 50, "batch_size": 64})
def load_smnist(folder: Path | None = None) -> MultimodalDataset:
    """The prepared S-MNIST protocol: modalities image and audio, both 1×28×28, 10 classes."""
    arrays, _ = common.read(folder or root(), "smnist", SCRIPT)
    return MultimodalDataset("smnist", ("image", "audio"), 10, common.splits_from(arrays, ("image", "audio")),
                             description="S-MNIST (MNIST + Speech Commands MFCCs), MILES paper protocol")
