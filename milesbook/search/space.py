"""The search space: what a search of a method draws, and where each range comes from.

Every method searches the same global learning rate (`LR_RANGE`), plus each of its knobs declared
with a `search` range beside the method (`milesbook.methods`, `Hyperparameter.search`). MSLR's
per-encoder rates are not drawn: as in the MSLR paper, each encoder trains at the rate its unimodal
model's own search chose (`unimodal_rates`), and MSLR's search draws the rest — the global rate (its
fusion head's), λ, the window. `--space FILE` replaces ranges (or gives one to a knob declared
without), each end checked against the parameter's valid domain.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

from ..config import TrainConfig
from ..errors import UserError
from ..methods import SearchRange, hyperparameters_of
from ..methods.base import Hyperparameter, unimodal_name

# Ours: a decade either side of the trainer's default 1e-3 (the paper states no range). Every
# method searches it, so their rows compare at equal tuning effort on the rate.
LR_RANGE = SearchRange(1e-4, 1e-2, log=True, source="ours: a decade either side of the default 1e-3 "
                                                    "(the paper states no range)")


def search_space(method: str, modalities, overrides: dict | None = None, origin: str = "") -> dict[str, SearchRange]:
    """The parameters a search of `method` draws, {name: SearchRange}: the global `lr` (`LR_RANGE`)
    and every knob of the method declared with a `search` range. `overrides` ({name: {low, high, log,
    choices}}, e.g. from `--space FILE`, named by `origin`) replace ranges after a check against each
    parameter's valid domain."""
    space = {"lr": LR_RANGE}
    space.update({k.name: k.search for k in hyperparameters_of(method) if k.search is not None})
    for name, fields_ in (overrides or {}).items():
        knob = _knob(name, method)
        if name not in space and (knob is None or isinstance(knob.default, dict)):
            others = [k.name for k in hyperparameters_of(method) if k.name not in space and not isinstance(k.default, dict)]
            raise UserError(f"{origin}: {name!r} is not a parameter of {method}; it can search "
                            f"{', '.join([*space, *others])}")
        # A knob declared without a range may be searched too, once the file gives its whole range.
        space[name] = _override(name, space.get(name, SearchRange()), fields_, method, origin)
    return space


def _knob(name: str, method: str) -> Hyperparameter | None:
    return next((k for k in hyperparameters_of(method) if k.name == name), None)


def _override(name: str, declared: SearchRange, fields_: dict, method: str, origin: str) -> SearchRange:
    """`declared` with the fields of one `--space` table, each end checked against the domain."""
    unknown = sorted(set(fields_) - {"low", "high", "log", "choices"})
    if unknown:
        raise UserError(f"{origin}: [{name}] has unknown key(s) {unknown}; use low, high, log or choices")
    knob = _knob(name, method)
    whole = knob is not None and type(knob.default) is int  # integer knobs draw integers
    merged = {**asdict(declared), **fields_, "source": origin}
    if "choices" in fields_:
        merged.update(low=None, high=None, log=False, choices=tuple(fields_["choices"]))
        if not merged["choices"]:
            raise UserError(f"{origin}: [{name}] choices is empty; list at least one value")
        values = [("choice", v) for v in merged["choices"]]
    else:
        merged["choices"] = ()
        for end in ("low", "high"):
            value = merged[end]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or (whole and value != int(value)):
                kind = "a whole number" if whole else "a finite number"
                raise UserError(f"{origin}: [{name}] {end} = {value!r} must be {kind}")
            merged[end] = int(value) if whole else float(value)
        if merged["low"] > merged["high"]:
            raise UserError(f"{origin}: [{name}] low = {merged['low']} is above high = {merged['high']}; swap them")
        values = [("low", merged["low"]), ("high", merged["high"])]
    for end, value in values:
        if not _in_domain(name, value, knob):
            rule = knob.rule if knob is not None and knob.rule else \
                f"one of {', '.join(map(str, knob.choices))}" if knob is not None else "> 0"
            raise UserError(f"{origin}: [{name}] {end} = {value} is outside {name}'s valid domain ({rule}); "
                            f"give values inside it")
    if not isinstance(merged["log"], bool):
        raise UserError(f"{origin}: [{name}] log = {merged['log']!r} must be true or false")
    if merged["log"] and not merged["choices"] and merged["low"] <= 0:
        raise UserError(f"{origin}: [{name}] log = true needs low > 0, got {merged['low']}; raise low or drop log")
    return SearchRange(**merged)


def _in_domain(name: str, value, knob: Hyperparameter | None) -> bool:
    if knob is None:  # lr and MSLR's per-modality rates: any positive rate
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    try:
        knob.check(value)
    except (UserError, TypeError):
        return False
    return True


def read_space_file(path) -> dict[str, dict]:
    """{name: {low, high, log, choices}} from a TOML file (`[tau]` / `low = 0.0` / `high = 0.3`), or
    YAML when it ends in .yaml / .yml (`tau: {low: 0.0, high: 0.3}`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--space {path}: no such file; give a TOML file such as: [tau] low = 0.0  high = 0.3")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # only YAML needs pyyaml
            tables = yaml.safe_load(text) or {}
        else:
            import tomllib
            tables = tomllib.loads(text)
    except ImportError:
        raise UserError(f"--space {path}: reading YAML needs pyyaml (pip install pyyaml), or write it as TOML") from None
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"--space {path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'TOML'}: "
                        f"{first}") from None
    if not isinstance(tables, dict) or not all(isinstance(v, dict) for v in tables.values()):
        raise UserError(f"--space {path}: expected one table per parameter, e.g. [tau] low = 0.0  high = 0.3")
    return tables


def describe_range(r: SearchRange) -> str:
    """"log-uniform [0.0001, 0.01]", "uniform [0, 0.5]", "integers [2, 10]" or "one of [a, b]"."""
    if r.choices:
        return f"one of [{', '.join(map(str, r.choices))}]"
    kind = "integers" if _whole(r) else "log-uniform" if r.log else "uniform"
    return f"{kind}{' (log)' if r.log and _whole(r) else ''} [{r.low:g}, {r.high:g}]"


def _whole(r: SearchRange) -> bool:
    return all(type(v) is int for v in (r.low, r.high))


def suggest(trial, name: str, r: SearchRange):
    """Ask the trial's sampler for parameter `name` in range `r`."""
    if r.choices:
        return trial.suggest_categorical(name, list(r.choices))
    if _whole(r):
        return trial.suggest_int(name, r.low, r.high, log=r.log)
    return trial.suggest_float(name, r.low, r.high, log=r.log)


def trial_config(base: TrainConfig, params: dict, modalities) -> TrainConfig:
    """`base` with one trial's parameters (lr and the method's knobs)."""
    return replace(base, **params)


def unimodal_rates(folder, modalities) -> dict[str, float] | None:
    """{modality: lr} that the finished `unimodal-<m>` searches in `folder` chose (their best.json),
    or None when one of them is missing: the rates MSLR trains each encoder at."""
    from ..handed import read_best
    rates = {}
    for m in modalities:
        best = Path(folder) / unimodal_name(m) / "best.json"
        if not best.exists():
            return None
        lr = read_best(best)["params"].get("lr")
        if not isinstance(lr, float) or not lr > 0:
            raise UserError(f"{best}: params.lr — should be a learning rate > 0, got {lr!r}; it was edited")
        rates[m] = lr
    return rates
