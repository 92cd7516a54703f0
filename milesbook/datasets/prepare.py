"""What the paper datasets' data scripts share: the cache folder, copying `--from` files, reading
audio and video with clear errors, the completion marker, and the scripts' command line.

A prepared dataset is a folder under `cache_dir()` holding `raw/` (the source files, verified),
`prepared.npz` (the protocol's arrays) and `prepared.json` — written last, so a folder without it
is never taken as complete, whatever else an interrupted run left there.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .registry import SPLITS, Split, atomic_save_npz, cache_dir


def root(name: str) -> Path:
    return cache_dir() / name


def is_prepared(folder: Path) -> bool:
    return (Path(folder) / "prepared.json").exists()


def finish(folder: Path, arrays: dict[str, np.ndarray], marker: dict) -> Path:
    """Write the arrays, then the marker that says they are complete."""
    folder = Path(folder)
    atomic_save_npz(folder / "prepared.npz", **arrays)
    (folder / "prepared.json.tmp").write_text(json.dumps(marker, indent=2))
    os.replace(folder / "prepared.json.tmp", folder / "prepared.json")
    return folder / "prepared.npz"


def run(title: str, folder: Path, fetch, build, marker: dict | None = None, unit: str = "pairs") -> Path:
    """The steps of every `prepare`: skip a prepared folder; `fetch()` the sources (returns what was
    checked); `build()` the arrays (returns them and extra marker fields); write both, marker last."""
    if is_prepared(folder):
        print(f"{title} is already prepared in {folder}")
        return Path(folder) / "prepared.npz"
    checked = fetch()
    arrays, extra = build()
    sizes = [len(arrays[f"{s}_labels"]) for s in SPLITS]
    path = finish(folder, arrays, {**(marker or {}), "sizes": sizes, **extra, **checked})
    print(f"prepared {dict(zip(SPLITS, sizes))} {unit} in {path}")
    return path


def read(folder: Path, name: str, script: str) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays and the marker of a dataset, or a UserError naming the script to run."""
    folder = Path(folder)
    if not is_prepared(folder):
        raise UserError(f"dataset {name!r} is not prepared; run: {script}")
    with np.load(folder / "prepared.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    return arrays, json.loads((folder / "prepared.json").read_text())


def splits_from(arrays: dict[str, np.ndarray], modalities) -> dict[str, Split]:
    """`{split}_{modality}` and `{split}_labels` arrays as the three Splits."""
    return {s: Split({m: torch.from_numpy(arrays[f"{s}_{m}"]) for m in modalities},
                     torch.from_numpy(arrays[f"{s}_labels"])) for s in SPLITS}


def copy_from(source: Path, dest: Path, names, what: str) -> None:
    """Copy `names` (paths relative to `source`) into `dest`, each through a `.part` file; files
    already there with the same size are kept (so a re-run after an interruption is quick)."""
    source, dest = Path(source), Path(dest)
    missing = [n for n in names if not (source / n).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"--from {source}: missing {shown} ({what})")
    for name in names:
        target = dest / name
        if target.exists() and target.stat().st_size == (source / name).stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target.with_name(target.name + ".part"))
        os.replace(target.with_name(target.name + ".part"), target)


def damaged(path: Path, error, script: str) -> UserError:
    return UserError(f"{path} is truncated or damaged ({error}); delete it and re-run {script}")


def read_wav(path: Path, script: str, rate: int = 16000) -> np.ndarray:
    """A WAV file as mono float32 in [-1, 1] at `rate` Hz (resampled if it was recorded at another rate).
    A file shorter than its header says is an error, not a shorter clip."""
    from math import gcd

    from scipy.io import wavfile
    from scipy.signal import resample_poly
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Reached EOF prematurely" is only a warning in scipy
            file_rate, samples = wavfile.read(path)
    except (ValueError, OSError, EOFError, wavfile.WavFileWarning) as error:
        raise damaged(path, error, script) from None
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / np.iinfo(samples.dtype).max
    elif samples.dtype.kind == "u":  # 8-bit WAVs are unsigned
        samples = (samples.astype(np.float32) - 128) / 128
    samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(1)
    if file_rate != rate:
        g = gcd(file_rate, rate)
        samples = resample_poly(samples, rate // g, file_rate // g).astype(np.float32)
    return samples


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """The first `length` samples, zero-padded at the end when shorter."""
    out = np.zeros(length, dtype=np.float32)
    out[:min(length, len(samples))] = samples[:length]
    return out


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (with antialiasing) of an (H, W) or (C, H, W) array to `size`, as float32."""
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    x = x[None, None] if x.dim() == 2 else x[None]
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return (out[0] if array.ndim == 2 else out).numpy()


def middle_frame(path: Path, script: str) -> np.ndarray:
    """The RGB frame (H, W, 3) uint8 at the middle of a video file: seek to the keyframe before the
    middle, decode forward to the first frame at or after it (PyAV, the `video` extra)."""
    try:
        import av
    except ImportError:
        raise UserError("reading the video files needs PyAV: pip install 'milesbook[video]'") from None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            middle = (container.duration or 0) / 2 / 1e6  # seconds; 0 when the file states no duration
            if middle > 0:
                container.seek(int(middle * 1e6), any_frame=False)
            frame = None
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= middle:
                    break
            if frame is None:
                raise ValueError("no video frame could be decoded")
            return frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as error:
        raise damaged(path, error, script) from None


def standardize_stats(train: np.ndarray) -> tuple[float, float]:
    """Mean and std of a training array (computed in float64 chunks: the arrays can be gigabytes)."""
    total, squares, count = 0.0, 0.0, 0
    for chunk in np.array_split(train.reshape(len(train), -1), max(1, len(train) // 512)):
        chunk = chunk.astype(np.float64)
        total, squares, count = total + chunk.sum(), squares + (chunk ** 2).sum(), count + chunk.size
    mean = total / count
    return float(mean), float(np.sqrt(max(squares / count - mean ** 2, 1e-12)))


def stratified_sizes(labels: np.ndarray, sizes: tuple[int, int, int], rng: np.random.Generator) -> list[np.ndarray]:
    """Train/val/test indices of exactly `sizes`, each class split in proportion (largest remainders)."""
    total = sum(sizes)
    if total > len(labels):
        raise UserError(f"{len(labels)} samples are too few for splits of {sizes}")
    classes = np.unique(labels)
    members = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    counts = np.array([len(members[c]) for c in classes]) * total / len(labels)
    taken = np.floor(counts).astype(int)
    taken[np.argsort(counts - taken)[::-1][:total - taken.sum()]] += 1  # the largest remainders
    parts: list[list[int]] = [[], [], []]
    for c, n_c in zip(classes, taken):
        idx = members[c][:n_c]
        cuts = np.floor(np.cumsum(sizes) / total * n_c).astype(int)
        parts[0] += idx[:cuts[0]].tolist()
        parts[1] += idx[cuts[0]:cuts[1]].tolist()
        parts[2] += idx[cuts[1]:].tolist()
    # Per-class rounding can leave a split one or two off its size: move samples from the largest.
    parts = [list(rng.permutation(p)) for p in parts]
    for i in (1, 2):
        while len(parts[i]) < sizes[i]:
            parts[i].append(parts[0].pop())
        while len(parts[i]) > sizes[i]:
            parts[0].append(parts[i].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def script_main(module, doc: str, argv=None, options=()) -> int:
    """The command line of `data_scripts/<name>.py`: --from, --out, --seed and the dataset's own
    `options` ((flag, argparse kwargs) pairs, passed to `module.prepare` by their dest)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="folder that already holds the source files "
                        "(laid out as the download; see above)")
    parser.add_argument("--out", type=Path, default=None, help=f"where to prepare it (default {module.root()})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split / pairing")
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    args = vars(parser.parse_args(argv))
    print(f"{module.TITLE} — licence: {module.LICENCE}\ncite: {module.CITATION}")
    try:
        module.prepare(args.pop("out"), **args)
    except UserError as error:
        print(f"{module.NAME}: error: {error}", file=sys.stderr)
        return 2
    return 0
