"""The dataset registry: what a dataset is (`MultimodalDataset`), the `register` decorator and the
lookup by name. It imports no dataset — each dataset module registers itself here, and
`milesbook.datasets` imports them all (the torchvision `models/_api.py` pattern).

Every dataset is returned as a `MultimodalDataset`: named modalities, each split's tensors held in
memory, and a `train_noise_std` per modality — Gaussian noise the trainer draws afresh at every
training step (validation and test inputs carry a fixed draw baked in when the data is built).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import UserError, check_choice

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
    # Where the data came from, when it is not a registered dataset: "folder /abs/path" or "in memory"
    # (`milesbook.datasets.arrays`); recorded in every run's provenance.
    origin: str = ""

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


def register(name: str, modalities: tuple[str, ...], description: str, **entry_fields):
    """Decorator for a dataset's `load` function: `@register("digits-av", ("image", "audio"), "...")`.
    `entry_fields` are the other `DatasetEntry` fields (`prepared`, `data_script`, `protocol`). A name
    registered already is refused: a second registration would silently replace the first."""
    def decorate(load: Callable[..., MultimodalDataset]) -> Callable[..., MultimodalDataset]:
        if name in REGISTRY:
            first = REGISTRY[name].load
            raise ValueError(f"dataset {name!r} is registered twice ({first.__module__}.{first.__qualname__} and "
                             f"{load.__module__}.{load.__qualname__})")
        REGISTRY[name] = DatasetEntry(name, tuple(modalities), description, load, **entry_fields)
        return load
    return decorate


def list_datasets(synthetic: bool | None = None) -> list[str]:
    """Registered names: all of them, or only the real datasets (`synthetic=False`) or generators (True)."""
    return [name for name in REGISTRY if synthetic is None or (name in SYNTHETIC) == synthetic]


def load_dataset(name: str, **options) -> MultimodalDataset:
    """Load a registered dataset by name; options are the dataset's documented knobs."""
    entry = REGISTRY[check_choice("dataset", name, REGISTRY)]
    if not entry.prepared():
        raise UserError(f"dataset {name!r} is not prepared; run: {entry.data_script}")
    return entry.load(**options)


def take_rows(x, index):
    """`x[index]` of a split's tensor; of a split read on demand (`arrays.Rows`), the same rows still
    unread — G-Blend's held-out part of a folder larger than memory stays on disk."""
    return x.subset(index) if hasattr(x, "subset") else x[index]


def cache_dir() -> Path:
    """Where built datasets are cached: $MILESBOOK_CACHE, else $XDG_CACHE_HOME/milesbook, else ~/.cache."""
    if os.environ.get("MILESBOOK_CACHE"):
        return Path(os.environ["MILESBOOK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "milesbook"
