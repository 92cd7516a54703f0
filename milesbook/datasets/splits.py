"""Stratified train/val/test splits, written once: the embedded digits-av's, CREMA-D's and mfeat's
prepared splits, and the default split of your own data (`arrays`).

Each class's samples are put in a random order (one `rng.permutation` per class, classes in sorted
order) and cut into consecutive train, val and test pieces (`split_by_class`); the two ways of saying
how many go where — a fraction of each class, or exact split sizes — only compute those pieces' sizes.
The splits decide every golden number: a change here changes which sample lands where.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError


def split_by_class(labels: np.ndarray, class_sizes, rng: np.random.Generator) -> list[np.ndarray]:
    """Train/val/test indices: the samples of the k-th class of `np.unique(labels)`, in a random
    order, cut into pieces of `class_sizes[k]` = (train, val, test) samples (samples past their sum are
    left out). Indices grouped by class, in the drawn order (not sorted)."""
    parts: list[list[int]] = [[], [], []]
    for c, (n_train, n_val, n_test) in zip(np.unique(labels), class_sizes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:n_train + n_val + n_test].tolist()
    return [np.array(p, dtype=np.int64) for p in parts]


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float],
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of train/val/test with each class split in the same proportions (sorted, disjoint):
    round(fraction × n) of a class of n for val and test, the rest for train."""
    _, counts = np.unique(labels, return_counts=True)
    class_sizes = []
    for n in map(int, counts):
        n_val, n_test = int(round(fractions[1] * n)), int(round(fractions[2] * n))
        class_sizes.append((n - n_val - n_test, n_val, n_test))
    return [np.sort(p) for p in split_by_class(labels, class_sizes, rng)]


def stratified_sizes(labels: np.ndarray, sizes: tuple[int, int, int], rng: np.random.Generator) -> list[np.ndarray]:
    """Train/val/test indices of exactly `sizes`, each class split in proportion (largest remainders)."""
    total = sum(sizes)
    if total > len(labels):
        raise UserError(f"{len(labels)} samples are too few for splits of {sizes}")
    _, counts = np.unique(labels, return_counts=True)
    shares = counts * total / len(labels)
    taken = np.floor(shares).astype(int)
    taken[np.argsort(shares - taken)[::-1][:total - taken.sum()]] += 1  # the largest remainders
    class_sizes = []
    for n_c in taken:
        train_end, val_end = map(int, np.floor(np.cumsum(sizes) / total * n_c).astype(int)[:2])
        class_sizes.append((train_end, val_end - train_end, int(n_c) - val_end))
    # Per-class rounding can leave a split one or two off its size: move samples from the largest.
    parts = [list(rng.permutation(p)) for p in split_by_class(labels, class_sizes, rng)]
    for i in (1, 2):
        while len(parts[i]) < sizes[i]:
            parts[i].append(parts[0].pop())
        while len(parts[i]) > sizes[i]:
            parts[0].append(parts[i].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
