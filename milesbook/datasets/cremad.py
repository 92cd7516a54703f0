"""CREMA-D — Crowd-sourced Emotional Multimodal Actors Dataset (Cao et al., IEEE Trans. Affective
Computing 2014): 7,442 clips of 91 actors saying 12 sentences with 6 emotions. Download, prepare, load.

Source layout (the GitHub repository CheyneyComputerScience/CREMA-D, media in Git LFS):
`AudioWAV/<clip>.wav` (16 kHz mono PCM) and `VideoFlash/<clip>.flv`, with
`<clip> = <actor 1001–1091>_<sentence>_<emotion>_<level>` and emotion ∈ ANG, DIS, FEA, HAP, NEU, SAD
(the class, in that order).

The MILES paper's protocol, which `prepare` builds: a 70/15/15 split stratified by emotion (fixed
seed; 5,210 / 1,116 / 1,116 for all 7,442 clips); the audio's first 3 s (zero-padded) as a log power
spectrogram, `scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)` → 257×299, resized to
1×224×224 (stored float16); one video frame per clip — the frame at the middle of the clip (our
choice; OGM-GE's preprocessing takes one frame per second) — resized to 3×224×224 (stored uint8);
ResNet-18 encoders, 200 epochs. Both are standardized on the device with training-split statistics.
Known bad clips are left out and listed in `prepared.json`: `1076_MTI_SAD_XX` (no audio),
`1064_TIE_SAD_XX` (its video states no duration) and `1064_IEO_DIS_MD` (a one-minute recording of a
one-sentence clip), so the splits hold 7,439 clips: 5,207 / 1,116 / 1,116.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import prepare as common
from .registry import SPLITS, MultimodalDataset, register
from .splits import stratified_sizes
from .download import download, fetch_json, fetch_text, lfs_pointer
from ..errors import UserError

NAME = "cremad"
TITLE = "CREMA-D (Cao et al. 2014)"
REPO = "CheyneyComputerScience/CREMA-D"
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
KNOWN_BAD = {"1076_MTI_SAD_XX": "no audio", "1064_TIE_SAD_XX": "video states no duration",
             "1064_IEO_DIS_MD": "a one-minute recording"}
FRACTIONS = (0.70, 0.15, 0.15)
SIZE = 224
SECONDS = 3
RATE = 16000
LICENCE = "Open Database License (ODbL) v1.0, contents under the Database Contents License (DbCL) v1.0"
CITATION = ("H. Cao, D. G. Cooper, M. K. Keutmann, R. C. Gur, A. Nenkova, R. Verma, \"CREMA-D: Crowd-sourced "
            "Emotional Multimodal Actors Dataset\", IEEE Transactions on Affective Computing 5(4), 2014.")
SCRIPT = "python data_scripts/cremad.py"
LAYOUT = common.Layout({"audio": ((1, SIZE, SIZE), "float16"), "video": ((3, SIZE, SIZE), "uint8")}, len(EMOTIONS),
                       row_id="clip")


def root() -> Path:
    return common.root(NAME)


def is_prepared(folder: Path | None = None) -> bool:
    return common.is_prepared(folder or root())


def split_sizes(n: int) -> tuple[int, int, int]:
    """70/15/15 of n clips (5,210 / 1,116 / 1,116 for the paper's 7,442)."""
    val = test = round(FRACTIONS[1] * n)
    return n - val - test, val, test


def clip_label(clip: str, path: Path | None = None) -> int:
    """The class of a clip name; a name of another form is refused, naming `path`, the file it came from."""
    parts = clip.split("_")
    if len(parts) != 4 or parts[2] not in EMOTIONS:
        what = f"emotion {parts[2]!r} is not one of {', '.join(EMOTIONS)}" if len(parts) == 4 else \
            "not a CREMA-D clip name (<actor>_<sentence>_<emotion>_<level>)"
        if path is None:
            raise UserError(f"{clip!r}: {what}")
        raise UserError(f"{path}: {what}; rename or remove it (and the clip's other file), then re-run {SCRIPT}")
    return EMOTIONS.index(parts[2])


def _remote_files() -> list[str]:
    tree = fetch_json(f"https://api.github.com/repos/{REPO}/git/trees/master?recursive=1")
    return sorted(e["path"] for e in tree["tree"]
                  if e["type"] == "blob" and e["path"].startswith(("AudioWAV/", "VideoFlash/"))
                  and e["path"].endswith((".wav", ".flv")))


def media_names(folder: Path) -> list[str]:
    """`AudioWAV/*.wav` and `VideoFlash/*.flv` under `folder`, as paths relative to it."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for sub, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv"))
                  for p in (folder / sub).glob(f"*.{ext}"))


def unpaired(folder: Path, names=None) -> list[Path]:
    """The files a clip lacks under `folder` (among `names`, default all its media): each clip (but the
    known-bad ones) needs both `AudioWAV/<clip>.wav` and `VideoFlash/<clip>.flv`."""
    folder = Path(folder)
    names = [Path(n) for n in (media_names(folder) if names is None else names)]
    audio = {n.stem for n in names if n.parts[0] == "AudioWAV"}
    video = {n.stem for n in names if n.parts[0] == "VideoFlash"}
    return sorted([folder / "AudioWAV" / f"{c}.wav" for c in video - audio - set(KNOWN_BAD)]
                  + [folder / "VideoFlash" / f"{c}.flv" for c in audio - video - set(KNOWN_BAD)])


def _check_names(folder: Path, names, fix: str) -> None:
    """Every media file is named after a clip of a known emotion, and every clip has both files."""
    for name in names:
        clip_label(Path(name).stem, folder / name)
    missing = unpaired(folder, names)
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"missing {shown} (every clip needs its AudioWAV/<clip>.wav and VideoFlash/<clip>.flv); "
                        f"{fix}")


def fetch(folder: Path, source: Path | None = None, progress: bool = True) -> dict:
    """Put `AudioWAV/*.wav` and `VideoFlash/*.flv` in `folder/raw`: copied from `source` (a clone, e.g.
    `git lfs clone`; second copies such as `<clip> (1).wav` are named and left out) or downloaded file by
    file from GitHub's LFS media host, each verified against the sha256 and size of its LFS pointer.
    Returns the source, how each kind of file was verified and the files put in raw/."""
    raw = Path(folder) / "raw"
    if source is not None:
        source = Path(source)
        names = common.without_copies(source, media_names(source))
        if not names:
            raise UserError(f"--from {source}: no AudioWAV/*.wav or VideoFlash/*.flv files (a CREMA-D clone)")
        _check_names(source, names, f"restore them in {source} and re-run {SCRIPT}")
        common.copy_from(source, raw, names, "CREMA-D media")
        how = common.FROM_UNCHECKED + "; every file decoded while preparing"
        return {"source": str(source), "verified": {"AudioWAV/*.wav": how, "VideoFlash/*.flv": how},
                common.RAW_FILES: names}
    names = _remote_files()
    print(f"downloading {len(names)} media files (~7.5 GB: WAVs ~0.6 GB, FLVs the rest) into {raw}")
    for name in tqdm(names, desc="CREMA-D files", disable=not progress):
        pointer = lfs_pointer(fetch_text(f"https://raw.githubusercontent.com/{REPO}/master/{name}"))
        download(f"https://media.githubusercontent.com/media/{REPO}/master/{name}", raw / name,
                 pointer["size"], progress=False, sha256=pointer["sha256"])
    how = "size and sha256 from the file's Git LFS pointer; decoded while preparing"
    return {"source": f"github.com/{REPO} (Git LFS)", "verified": {"AudioWAV/*.wav": how, "VideoFlash/*.flv": how},
            common.RAW_FILES: names}


def spectrogram(samples: np.ndarray) -> np.ndarray:
    """(1, 224, 224) log power spectrogram of the first 3 s of 16 kHz audio (the paper's settings)."""
    from scipy.signal import spectrogram as scipy_spectrogram
    _, _, power = scipy_spectrogram(common.fit_length(samples, SECONDS * RATE), RATE, nperseg=512, noverlap=353)
    return common.resize(np.log(power + 1e-7), (SIZE, SIZE))[None]  # (257, 299) → (1, 224, 224)


def build(raw: Path, seed: int = 0, progress: bool = True, names=None) -> tuple[dict[str, np.ndarray], dict]:
    """The protocol arrays from the raw media `names` (paths relative to `raw`; default all it holds) —
    see the module docstring — and what was left out."""
    raw = Path(raw)
    names = media_names(raw) if names is None else names
    clips = sorted(Path(n).stem for n in names if Path(n).parts[0] == "AudioWAV")
    if not clips:
        raise UserError(f"{raw}: no AudioWAV/*.wav files; re-run {SCRIPT}")
    _check_names(raw, names, f"re-run {SCRIPT} (with --from, put them in that folder first)")
    skipped = {c: why for c, why in KNOWN_BAD.items() if c in clips}
    clips = [c for c in clips if c not in skipped]
    labels = np.array([clip_label(c) for c in clips], dtype=np.int64)
    audio = np.empty((len(clips), 1, SIZE, SIZE), dtype=np.float16)
    video = np.empty((len(clips), 3, SIZE, SIZE), dtype=np.uint8)
    for i, clip in enumerate(tqdm(clips, desc="CREMA-D clips", disable=not progress)):
        audio[i] = common.audio_feature(raw / "AudioWAV" / f"{clip}.wav", SCRIPT, RATE, spectrogram)
        frame = common.middle_frame(raw / "VideoFlash" / f"{clip}.flv", SCRIPT).transpose(2, 0, 1)
        video[i] = np.clip(np.rint(common.resize(frame, (SIZE, SIZE))), 0, 255)
    parts = stratified_sizes(labels, split_sizes(len(clips)), np.random.default_rng(seed))
    arrays = {}
    for split, index in zip(SPLITS, parts):
        arrays.update({f"{split}_audio": audio[index], f"{split}_video": video[index],
                       f"{split}_labels": labels[index], f"{split}_clip": np.array(clips)[index]})
    stats = {m: common.standardize_stats(arrays[f"train_{m}"]) for m in ("audio", "video")}
    return arrays, {"skipped": skipped, "normalize": stats}


def prepare(folder: Path | None = None, source: Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Fetch (or copy) the media, build the protocol arrays, write them and only then the marker."""
    folder = Path(folder or root())
    fetched: dict = {}

    def fetch_step() -> dict:
        fetched.update(fetch(folder, source, progress))
        return fetched
    return common.run("CREMA-D", folder, fetch_step,
                      lambda: build(folder / "raw", seed, progress, fetched[common.RAW_FILES]),
                      LAYOUT, SCRIPT, {"seed": seed}, unit="clips")


@register(NAME, ("audio", "video"), "CREMA-D: emotion from speech audio + a face frame, 70/15/15",
          prepared=is_prepared, data_script=SCRIPT,
          protocol={"encoder": "resnet18", "epochs": 200, "batch_size": 64})
def load_cremad(folder: Path | None = None) -> MultimodalDataset:
    """The prepared CREMA-D protocol: audio 1×224×224 spectrograms, video 3×224×224 frames, 6 emotions."""
    arrays, marker = common.read(folder or root(), NAME, SCRIPT)
    return MultimodalDataset(NAME, ("audio", "video"), len(EMOTIONS), common.splits_from(arrays, ("audio", "video")),
                             normalize={m: tuple(v) for m, v in marker["normalize"].items()},
                             description="CREMA-D (6 emotions), MILES paper protocol: log spectrogram + middle frame")
