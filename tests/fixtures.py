"""Tiny copies of the paper datasets in their exact on-disk formats (file names, dtypes, shapes per
sample, label encoding), for testing the data scripts and loaders without the real downloads."""
from pathlib import Path

import numpy as np


def write_smnist(folder, n_train: int = 120, n_test: int = 40, seed: int = 0, pixel_dtype=np.float64) -> Path:
    """The six S-MNIST files: MNIST pixels (N, 784) in 0–255, spoken MFCCs (N, 507) standardized
    floats, labels (N,) 0–9, written/spoken rows paired by class. Pixels are class-dependent so a
    model can learn something."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        pixels = rng.integers(0, 64, (n, 784)).astype(np.float64)
        pixels[np.arange(n), labels * 78] = 255.0
        mfcc = rng.standard_normal((n, 507))
        mfcc[:, :10] += np.eye(10)[labels] * 3
        np.save(folder / f"data_wr_{part}.npy", pixels.astype(pixel_dtype))
        np.save(folder / f"data_sp_{part}.npy", mfcc)
        np.save(folder / f"labels_{part}.npy", labels)
    return folder
