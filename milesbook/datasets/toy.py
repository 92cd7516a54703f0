"""toy: SYNTHETIC data for teaching, with a dial for each modality's strength."""
from __future__ import annotations

import torch

from ..errors import UserError
from .registry import SPLITS, MultimodalDataset, Split, register


@register("toy", ("a", "b"), "SYNTHETIC: Gaussian class prototypes with a strength dial per modality")
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
