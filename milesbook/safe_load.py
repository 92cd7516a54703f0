"""Reading a file of tensors that someone may have passed around (a run's checkpoint, a model's
weights) without running anything in it. Imports nothing of ours but errors, so any module can use it."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .errors import UserError


def load_tensors(path: Path, device, remedy: str):
    """What `path` holds, read with `torch.load(weights_only=True)`: tensors, state dicts and plain
    Python values only, so a crafted file cannot run code when it is read. Anything else is one line
    (a UserError) naming the file and ending in `remedy`; nothing of it is run."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        what = str(error).split("\n")[0][:160]
        raise UserError(f"{path} holds more than tensors and plain values ({what}): refused, nothing of it was "
                        f"run (a crafted or foreign file?); {remedy}") from None
    except (EOFError, RuntimeError, OSError) as error:
        raise UserError(f"{path} cannot be read ({type(error).__name__}: {str(error)[:120]}); {remedy}") from None
