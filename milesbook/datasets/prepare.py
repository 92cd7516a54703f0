"""What the paper datasets' data scripts share: the cache folder, copying `--from` files, reading
audio and video with clear errors, the checks of the prepared arrays, the completion marker, and the
scripts' command line.

A prepared dataset is a folder under `cache_dir()` holding `raw/` (the source files), `prepared.npz`
(the protocol's arrays) and `prepared.json` — which records where each source came from and how it
was verified, and is written last, so a folder without it is never taken as complete, whatever else
an interrupted run left there. It is written only after the arrays pass `check_prepared`; files left in
`raw/` by an earlier, different preparation are never read, and are removed once the new one is complete.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import check_writable, save_npz, write_text
from ..errors import UserError
from .registry import SPLITS, Split, cache_dir


def root(name: str) -> Path:
    return cache_dir() / name


def is_prepared(folder: Path) -> bool:
    return (Path(folder) / "prepared.json").exists()


def finish(folder: Path, arrays: dict[str, np.ndarray], marker: dict) -> Path:
    """Write the arrays, then the marker that says they are complete."""
    folder = Path(folder)
    save_npz(folder / "prepared.npz", **arrays)
    write_text(folder / "prepared.json", json.dumps(marker, indent=2))
    return folder / "prepared.npz"


# The key under which a dataset's `fetch` returns the paths it put in raw/ (see `run`).
RAW_FILES = "raw_files"


@dataclass(frozen=True)
class Layout:
    """What a dataset's prepared arrays must be: `modalities` maps each `{split}_<modality>` array to the
    shape of one sample and its dtype; labels are class ids below `classes` (or, `multilabel`, 0/1 rows
    of `classes` columns); `{split}_<row_id>` names each row's source in messages (a clip, a movie id)."""
    modalities: dict[str, tuple[tuple[int, ...], str]]
    classes: int
    row_id: str
    multilabel: bool = False


def run(title: str, folder: Path, fetch, build, layout: Layout, script: str, marker: dict | None = None,
        unit: str = "pairs") -> Path:
    """The steps of every `prepare`: skip a prepared folder; refuse one this user cannot write in;
    `fetch()` the sources (returns their `source`, under `verified` how each file was checked and, under
    `RAW_FILES`, the paths in `raw/` it put there — not recorded); `build()` the arrays (returns them and
    extra marker fields); check them against `layout`; write both, marker last; then remove what else
    `raw/` holds."""
    folder = Path(folder)
    if is_prepared(folder):
        print(f"{title} is already prepared in {folder}")
        return folder / "prepared.npz"
    for where in (folder, folder / "raw"):
        check_writable(where, f"prepare it elsewhere with --out DIR (or MILESBOOK_CACHE=DIR, the cache of all "
                              f"datasets; now {cache_dir()})")
    checked = dict(fetch())
    used = checked.pop(RAW_FILES, None)
    arrays, extra = build()
    check_prepared(arrays, layout, script)
    sizes = [len(arrays[f"{s}_labels"]) for s in SPLITS]
    path = finish(folder, arrays, {**(marker or {}), "sizes": sizes, **extra, **checked})
    if used is not None:
        remove_stale(folder / "raw", used)
    print(f"prepared {dict(zip(SPLITS, sizes))} {unit} in {path}")
    return path


def check_prepared(arrays: dict[str, np.ndarray], layout: Layout, script: str, chunk: int = 256) -> None:
    """Refuse arrays that are not what `layout` says, or hold NaN or infinity, before anything marks them
    complete. A non-finite row names its source (a damaged file that decoded); the rest would be a bug."""
    bug = "nothing was marked complete; this is a bug in milesbook's preparation, please report it"
    for split in SPLITS:
        labels = arrays[f"{split}_labels"]
        n = len(labels)
        for modality, (shape, dtype) in layout.modalities.items():
            key = f"{split}_{modality}"
            array = arrays[key]
            if array.shape != (n, *shape) or array.dtype != np.dtype(dtype):
                raise UserError(f"prepared {key} is {array.dtype} {array.shape}, expected {dtype} {(n, *shape)}; {bug}")
            if array.dtype.kind != "f":
                continue
            for start in range(0, n, chunk):
                bad = ~np.isfinite(array[start:start + chunk].reshape(-1, int(np.prod(shape))).astype(np.float32))
                if bad.any():
                    row = start + int(np.flatnonzero(bad.any(1))[0])
                    raise UserError(f"the prepared {modality} of {layout.row_id} {arrays[f'{split}_{layout.row_id}'][row]} "
                                    f"({split} row {row}) holds NaN or infinite values: a damaged source file that "
                                    f"still decoded; replace it and re-run {script}")
        if layout.multilabel:
            wrong = labels.shape != (n, layout.classes) or not np.isin(labels, (0, 1)).all()
        else:
            wrong = labels.shape != (n,) or labels.dtype.kind not in "iu" or \
                (n > 0 and (labels.min() < 0 or labels.max() >= layout.classes))
        if wrong:
            expected = f"0/1 rows of {layout.classes}" if layout.multilabel else f"class ids 0–{layout.classes - 1}"
            raise UserError(f"prepared {split}_labels ({labels.dtype} {labels.shape}) are not {expected}; {bug}")


def remove_stale(raw: Path, used) -> None:
    """Remove the files of `raw` that are not `used` (paths relative to it; a folder keeps all it holds):
    left by an earlier, different preparation (or `.part` files of an interrupted copy), never read."""
    raw, used = Path(raw), {Path(name) for name in used}
    stale = [p for p in raw.rglob("*") if p.is_file() and not any(
        part in used for part in (p.relative_to(raw), *p.relative_to(raw).parents))]
    for path in stale:
        path.unlink()
    for folder in sorted((p for p in raw.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    if stale:
        print(f"removed {len(stale)} file(s) left in {raw} by an earlier preparation, e.g. {stale[0].name}")


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


# How a browser or file manager names a second copy of x.ext: "x (1).ext".
SECOND_COPY = re.compile(r"^(?P<stem>.*?) \((?P<n>\d+)\)(?P<suffix>(\.[^.]+)*)$")


def without_copies(source: Path, names) -> list[str]:
    """`names` (paths relative to `source`) less the second copies ("x (1).ext") among them. Those, and the
    second copies lying beside the files kept, are named in one warning on stderr: never read, since
    which copy is the good one is the user's to say."""
    source, names = Path(source), list(names)
    kept = [n for n in names if not SECOND_COPY.match(Path(n).name)]
    wanted = {source / n for n in kept}
    beside = {p for folder in {path.parent for path in wanted} if folder.is_dir() for p in folder.iterdir()
              if (m := SECOND_COPY.match(p.name)) and p.with_name(m["stem"] + m["suffix"]) in wanted}
    copies = sorted({str(p.relative_to(source)) for p in beside} | (set(names) - set(kept)))
    if copies:
        shown = ", ".join(copies[:3]) + (f" and {len(copies) - 3} more" if len(copies) > 3 else "")
        print(f"warning: ignoring {shown} in {source}: a second copy (\"name (1).ext\") is never read — if it is "
              "the good one, put it in place of the original", file=sys.stderr)
    return kept


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
    if not np.isfinite(samples).all():  # a float WAV can hold them; every feature computed from it would too
        raise damaged(path, "samples that are NaN or infinite", script)
    if samples.ndim == 2:
        samples = samples.mean(1)
    if file_rate != rate:
        g = gcd(file_rate, rate)
        samples = resample_poly(samples, rate // g, file_rate // g).astype(np.float32)
    return samples


def audio_feature(path: Path, script: str, rate: int, transform) -> np.ndarray:
    """`transform` of a WAV file's samples (see `read_wav`), refused, naming the file, when it holds NaN or
    infinity: finite samples far outside [-1, 1] (a damaged float WAV) overflow a spectrogram."""
    with np.errstate(all="ignore"):  # the overflow is reported below, as one line naming the file
        feature = transform(read_wav(path, script, rate))
    if not np.isfinite(feature).all():
        raise damaged(path, "its samples give a spectrogram with NaN or infinite values (far outside [-1, 1]?)",
                      script)
    return feature


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
