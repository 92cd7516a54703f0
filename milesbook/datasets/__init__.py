"""The datasets, one module each, and the registry they add themselves to.

    registry.py   what a dataset is (`MultimodalDataset`), `register`, `load_dataset` — imports no dataset
    digits_av.py  the embedded default (real digits, offline)      toy.py     the synthetic generator
    smnist.py  cremad.py  luma.py  mmimdb.py                        the paper's datasets (prepared first)
    mfeat.py                                                        six views of one digit, for N > 2 (prepared first)
    arrays.py                                                       your own data: a folder of .npy files, or arrays
    prepare.py  download.py                                         what their data scripts share
    splits.py                                                       the stratified train/val/test split (digits-av, cremad, mfeat, arrays)

Adding a dataset is adding a module with a `@register(...)`-decorated loader and one import line here.
"""
from pathlib import Path

from . import registry
from .arrays import Rows, from_arrays, from_folder
from .registry import (REGISTRY, SPLITS, SYNTHETIC, DatasetEntry, MultimodalDataset, Split, cache_dir,
                       list_datasets, register)
from . import digits_av, toy, smnist, cremad, luma, mmimdb, mfeat  # noqa: E402,F401  (each registers itself)


def is_path(name: str) -> bool:
    """Does `--dataset NAME` name your own data (a folder or an .npz file) rather than a registered dataset?"""
    return name not in REGISTRY and ("/" in name or name.endswith(".npz") or Path(name).is_dir())


def load_dataset(name: str, **options) -> MultimodalDataset:
    """A registered dataset by name (options: its documented knobs), or your own data in a folder or
    .npz file (`arrays.from_folder`; option: `seed` of the default split)."""
    return from_folder(name, **options) if is_path(name) else registry.load_dataset(name, **options)


def entry_for(name: str) -> DatasetEntry:
    """The registry's entry for `name`, or one describing your own data's folder (its modalities read
    from the file names, nothing loaded)."""
    if not is_path(name):
        from ..errors import check_choice
        return REGISTRY[check_choice("dataset", name, REGISTRY)]
    folder = Path(name)
    if folder.is_dir():
        modalities = tuple(p.stem for p in sorted(folder.glob("*.npy")) if p.stem not in ("labels", "split"))
    elif folder.suffix == ".npz" and folder.is_file():
        import numpy as np
        with np.load(folder, allow_pickle=False) as bundle:
            modalities = tuple(n for n in bundle.files if n not in ("labels", "split"))
    else:
        modalities = ()
    return DatasetEntry(name, modalities, f"your data in {folder}", lambda **options: from_folder(name, **options),
                        prepared=lambda: True)
