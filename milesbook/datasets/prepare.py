"""What the paper datasets' data scripts share: the cache folder, copying `--from` files, reading
audio and video with clear errors, the completion marker, and the scripts' command line.

A prepared dataset is a folder under `cache_dir()` holding `raw/` (the source files), `prepared.npz`
(the protocol's arrays) and `prepared.json` — which records where each source came from and how it
was verified, and is written last, so a folder without it is never taken as complete, whatever else
an interrupted run left there.
"""
from __future__ import annotations

import argparse
import itertools
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
    """The steps of every `prepare`: skip a prepared folder; `fetch()` the sources (returns their
    `source` and, under `verified`, how each file was checked); `build()` the arrays (returns them and
    extra marker fields); write both, marker last."""
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
    with np.load(folder / "prepared.npz", allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    return arrays, json.loads((folder / "prepared.json").read_text())


def splits_from(arrays: dict[str, np.ndarray], modalities) -> dict[str, Split]:
    """`{split}_{modality}` and `{split}_labels` arrays as the three Splits."""
    return {s: Split({m: torch.from_numpy(arrays[f"{s}_{m}"]) for m in modalities},
                     torch.from_numpy(arrays[f"{s}_labels"])) for s in SPLITS}


# How a file copied with --from was verified, in the `verified` field of every dataset's marker
# (next to "size and md5 from ..." for downloads): no published checksum is at hand offline.
FROM = "copied from --from"
FROM_UNCHECKED = f"{FROM}, no checksum checked"

# Where each raw file copied with --from came from (this process only), so a damaged copy's message can
# name the file the user has to replace.
_copied_from: dict[Path, Path] = {}


def copy_from(source: Path, dest: Path, names, what: str) -> None:
    """Copy `names` (paths relative to `source`) into `dest`, each through a `.part` file that takes the
    source's modification time. A copy with the source's size and modification time is kept (a re-run
    after an interruption is quick); any other is copied again, so a fixed source file — or a raw copy
    damaged in place — is picked up even when the sizes agree."""
    source, dest = Path(source), Path(dest)
    missing = [n for n in names if not (source / n).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"--from {source}: missing {shown} ({what})")
    for name in names:
        origin, target = source / name, dest / name
        _copied_from[target] = origin
        wanted = origin.stat()
        if target.exists():
            have = target.stat()
            if (have.st_size, have.st_mtime_ns) == (wanted.st_size, wanted.st_mtime_ns):
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        shutil.copyfile(origin, part)
        os.utime(part, ns=(wanted.st_atime_ns, wanted.st_mtime_ns))
        os.replace(part, target)


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def is_lfs_pointer(path: Path) -> bool:
    """Whether `path` is a Git LFS pointer (what a clone made without git-lfs holds) instead of the file."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False


def one_line(text) -> str:
    """`text` on one line: some errors span several (tarfile's: one line per decompression it tried)."""
    return " ".join(str(text).split())


def remedy(path: Path, script: str) -> str:
    """What to do about a bad raw file: replace the --from file it was copied from, or delete it so that
    the next run downloads it again."""
    origin = _copied_from.get(Path(path))
    if origin is not None:
        return f"it is a copy of {origin}: replace that file and re-run {script}"
    return f"delete it and re-run {script}"


def damaged(path: Path, error, script: str, fix: str | None = None) -> UserError:
    """The one-line error for a raw file that cannot be read: it names the file, and says what to do —
    `fix`, when given, for a file that neither --from nor a download restores by itself."""
    path = Path(path)
    if is_lfs_pointer(path):
        origin = _copied_from.get(path)
        where = f"the clone holding {origin}" if origin else "the clone"
        return UserError(f"{path} is a Git LFS pointer, not the file itself (cloned without git-lfs): run "
                         f"`git lfs install && git lfs pull` in {where}, then re-run {script}")
    if path in _copied_from or fix is None:
        fix = remedy(path, script)
    return UserError(f"{path} is truncated or damaged ({one_line(error)}); {fix}")


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


def video_length(container, stream) -> float | None:
    """Seconds of video a file states: the stream's duration, else the container's, else frames ÷ rate;
    None when it states none of them."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / 1e6  # in av.time_base units (microseconds)
    if stream.frames and stream.average_rate:
        return stream.frames / float(stream.average_rate)
    return None


def middle_frame(path: Path, script: str) -> np.ndarray:
    """The RGB frame (H, W, 3) uint8 at the middle of a video file: the first frame at or after half the
    length the file states (PyAV, the `video` extra). A file whose decoding ends before that point —
    truncated, while its header still states the full length — or that states no length is damaged:
    its last decodable frame would be silently wrong data."""
    try:
        import av
    except ImportError:
        raise UserError("reading the video files needs PyAV: pip install 'milesbook[video]'") from None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            length = video_length(container, stream)
            if not length:
                raise damaged(path, "it states no duration or frame count, so its middle is unknown", script)
            start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
            middle = start + length / 2
            container.seek(int(middle * 1e6), any_frame=False)  # the keyframe at or before the middle
            frames = container.decode(stream)
            first = next(frames, None)
            if first is not None and first.time is not None and first.time > middle:
                container.seek(int(start * 1e6), any_frame=False)  # landed past it: decode from the start
                frames = container.decode(stream)
                first = next(frames, None)
            last = None
            for frame in itertools.chain([first] if first is not None else [], frames):
                if frame.time is None:
                    raise damaged(path, "a video frame has no timestamp, so its middle cannot be found", script)
                if frame.time >= middle:
                    return frame.to_ndarray(format="rgb24")
                last = frame.time
            ended = "no video frame decodes" if last is None else f"its frames stop at {last:.2f} s"
            raise damaged(path, f"{ended}, before the middle ({middle:.2f} s) of the {length:.2f} s it states", script)
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
        print(f"{module.NAME}: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0
