"""Samplers and pruners. The default, `DrawSampler`, is the paper's random search made reproducible
draw for draw: parameter `name` of draw k depends on (seed, k, name) alone."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from .draws import draw_of

SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "hyperband")


def stable_hash(text: str) -> int:
    """A 64-bit hash of `text` that is the same in every process (Python's `hash` is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


class DrawSampler(optuna.samplers.BaseSampler):
    """Random search, reproducible draw for draw: parameter `name` of draw k comes from
    `numpy.random.default_rng([seed, k, stable_hash(name)])` alone — not from the order in which
    trials run, which worker runs them, or what other trials drew."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name: str, param_distribution):
        rng = np.random.default_rng([self.seed, draw_of(trial), stable_hash(param_name)])
        return sample(rng, param_distribution)


def sample(rng: np.random.Generator, dist):
    """One value of an Optuna distribution (bounds, log, step or choices honoured)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, IntDistribution):
        if dist.log:  # log-uniform over [low − ½, high + ½], rounded, as Optuna's RandomSampler does
            value = round(math.exp(rng.uniform(math.log(dist.low - 0.5), math.log(dist.high + 0.5))))
        else:
            value = dist.low + dist.step * int(rng.integers((dist.high - dist.low) // dist.step + 1))
        return int(min(max(value, dist.low), dist.high))
    if dist.log:
        value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    elif dist.step is not None:
        value = dist.low + dist.step * int(rng.integers(round((dist.high - dist.low) / dist.step) + 1))
    else:
        value = rng.uniform(dist.low, dist.high)
    return float(min(max(value, dist.low), dist.high))


def make_sampler(kind: str, seed: int, stream: int = 0):
    """"random" → `DrawSampler(seed)`; "tpe" → `TPESampler` whose first (random) trials are the same
    draws; `stream` separates the TPE generators of workers started by one command."""
    if kind == "random":
        return DrawSampler(seed)
    sampler = optuna.samplers.TPESampler(seed=seed + 7919 * stream)
    sampler._random_sampler = DrawSampler(seed)  # its start-up draws: reproducible like random's
    return sampler


def make_pruner(kind: str, epochs: int):
    """Stop unpromising trials on their per-epoch validation metric ("none" never does)."""
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()
