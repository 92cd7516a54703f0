"""toy: SYNTHETIC data for teaching, with a dial for each modality's strength."""
from __future__ import annotations

import torch

from ..errors import UserError
from .registry import SPLITS, MultimodalDataset, Split, register


@register("toy", ("a", "b"), "SYNTHETIC: Gaussian class prototypes with a strength dial per modality "
                             "(any number of modalities: strengths=1,0.5,0.2)")
def load_toy(strength_a: float = 1.0, strength_b: float = 0.3, dim: int = 16, num_classes: int = 10,
             sizes: tuple[int, int, int] = (2000, 500, 500), seed: int = 0,
             strengths: str | list[float] | None = None) -> MultimodalDataset:
    """SYNTHETIC data for teaching: modality m of a sample of class c is `strength_m · p_m[c] + ε`
    with class prototypes p_m[c] ~ N(0, I_dim) and noise ε ~ N(0, I_dim). A larger strength means
    better separated classes, so `strength_a > strength_b` makes A the dominant modality.
    `strengths` ("1,0.5,0.2" or a list) replaces the two dials with one per modality, named a, b, c, …
    (at two modalities the data are those of `strength_a`, `strength_b`)."""
    dials = _dials(strengths) if strengths is not None else [strength_a, strength_b]
    if any(v < 0 for v in dials):
        raise UserError(f"strengths must be ≥ 0, got {', '.join(map(str, dials))}")
    _check_shape(dim, num_classes, sizes, len(dials))
    names = tuple("abcdefghijklmnopqrstuvwxyz"[:len(dials)])
    strength = dict(zip(names, dials))
    gen = torch.Generator().manual_seed(seed)
    prototypes = {m: torch.randn(num_classes, dim, generator=gen) for m in names}
    splits = {}
    for name, n in zip(SPLITS, sizes):
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        inputs = {m: strength[m] * prototypes[m][labels] + torch.randn(n, dim, generator=gen) for m in names}
        splits[name] = Split(inputs, labels)
    dial_text = ", ".join(f"{m}={v}" for m, v in strength.items())
    return MultimodalDataset(
        name="toy", modalities=names, num_classes=num_classes, splits=splits,
        description=f"SYNTHETIC Gaussian prototypes; strength {dial_text}")


MAX_VALUES = 1 << 28  # 1 GiB of float32: a teaching dataset, not a memory test


def _check_shape(dim, num_classes, sizes, modalities: int) -> None:
    """Whole, positive sizes whose data fit in `MAX_VALUES` numbers: a config you were handed asking for
    10^12 samples is one line, not a machine out of memory."""
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    if not (whole(dim) and dim >= 1 and whole(num_classes) and num_classes >= 2):
        raise UserError(f"toy needs a whole dim ≥ 1 and num_classes ≥ 2, got dim={dim!r}, num_classes={num_classes!r}")
    if not (isinstance(sizes, (list, tuple)) and len(sizes) == 3 and all(whole(n) and n >= 1 for n in sizes)):
        raise UserError(f"toy sizes are three whole numbers ≥ 1 (train, val, test), got {sizes!r}")
    values = (sum(sizes) + num_classes) * dim * modalities
    if values > MAX_VALUES:
        raise UserError(f"toy data of {values:,} numbers is larger than its bound of {MAX_VALUES:,} (1 GiB); "
                        "choose smaller sizes, dim or num_classes")


def _dials(strengths) -> list[float]:
    """[1.0, 0.5, 0.2] from "1,0.5,0.2" or a list; at least two, at most 26 modalities."""
    try:
        values = [float(v) for v in (strengths.split(",") if isinstance(strengths, str) else strengths)]
    except (TypeError, ValueError):
        raise UserError(f"toy strengths must be numbers separated by commas, e.g. 1,0.5,0.2; got {strengths!r}") from None
    if not 2 <= len(values) <= 26:
        raise UserError(f"toy needs 2 to 26 strengths (one per modality), got {len(values)}")
    return values
