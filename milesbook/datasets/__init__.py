"""The datasets, one module each, and the registry they add themselves to.

    registry.py   what a dataset is (`MultimodalDataset`), `register`, `load_dataset` — imports no dataset
    digits_av.py  the embedded default (real digits, offline)      toy.py     the synthetic generator
    smnist.py  cremad.py  luma.py  mmimdb.py                        the paper's datasets (prepared first)
    mfeat.py                                                        six views of one digit, for N > 2 (prepared first)
    prepare.py  download.py                                         what their data scripts share

Adding a dataset is adding a module with a `@register(...)`-decorated loader and one import line here.
"""
from .registry import (REGISTRY, SPLITS, SYNTHETIC, DatasetEntry, MultimodalDataset, Split, cache_dir,
                       list_datasets, load_dataset, register)
from . import digits_av, toy, smnist, cremad, luma, mmimdb, mfeat  # noqa: E402,F401  (each registers itself)
