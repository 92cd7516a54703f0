"""Statistics over seeds, written once for every report (`compare`, the tuned comparison, `diagnose`,
`verify`): mean ± std, Student's t-interval of the mean, and the difference of two methods paired by
seed. Imports nothing of milesbook: a low module (docs/layout.md).

The spread is the sample standard deviation (n − 1 in the denominator); one value has no spread (0.0)
and no interval.
"""
from __future__ import annotations

import math
import statistics


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (for 95 % intervals over seeds).
    scipy.special's, the routine scipy.stats.t.ppf calls, without importing scipy.stats (≈ 0.6 s)."""
    from scipy.special import stdtrit
    return float(stdtrit(df, p))


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of `values`; the std is 0.0 for a single value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def t_half_width(values: list[float], level: float = 0.95) -> float:
    """Half the width of the t-interval for the mean of `values` at confidence `level` (two-sided):
    t(0.5 + level/2, n − 1) · std / √n; 0.0 with fewer than two values."""
    if len(values) < 2:
        return 0.0
    return student_t_quantile(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """(low, high), the t-interval of the mean of `values` at confidence `level` (None with fewer than two)."""
    if len(values) < 2:
        return None
    mean, half = statistics.fmean(values), t_half_width(values, level)
    return mean - half, mean + half


def seed_differences(treated: list[dict], control: list[dict], key: str) -> list[float]:
    """`key` of each run in `treated` minus `key` of the `control` run with the same `seed`, in
    `treated`'s order (seeds only one side has are left out)."""
    control_by_seed = {r["seed"]: r[key] for r in control}
    return [r[key] - control_by_seed[r["seed"]] for r in treated if r["seed"] in control_by_seed]


def paired_difference(treated: list[dict], control: list[dict], key: str) -> dict | None:
    """`key` of `treated` minus `control`, paired by seed (the same seed gives both runs the same data
    order and initial draws): {"mean", "std", "n", "low", "high"}, the bounds of the 95 % t-interval of
    the mean over the shared seeds (None with one seed). None when no seed is shared."""
    diffs = seed_differences(treated, control, key)
    return mean_interval(diffs) if diffs else None


def mean_interval(values: list[float]) -> dict:
    """{"mean", "std", "n", "low", "high"} of `values`: the bounds of the 95 % t-interval of the mean
    (None with one value)."""
    mean, std = mean_std(values)
    interval = t_interval(values)
    if interval is None:
        return {"mean": mean, "std": std, "n": len(values), "low": None, "high": None}
    return {"mean": mean, "std": std, "n": len(values), "low": interval[0], "high": interval[1]}


def points(difference: dict | None) -> str:
    """A difference of proportions in percentage points: "+8.2 (95 % CI +1.8 to +14.7)", "+8.2 (one
    seed)" without an interval, "–" when not measured."""
    if difference is None:
        return "–"
    if difference["low"] is None:
        return f"{100 * difference['mean']:+.1f} (one seed)"
    return (f"{100 * difference['mean']:+.1f} (95 % CI {100 * difference['low']:+.1f} to "
            f"{100 * difference['high']:+.1f})")


def paired_at_resolution(treated: list[dict], control: list[dict], key: str, resolution: float) -> dict | None:
    """`paired_difference` with the per-seed differences (`per_seed`) and its interval at least
    ±`resolution` wide (`floored` when that widened it): identical differences over the seeds give a
    t-interval of zero width, which says nothing about a repeat with other seeds."""
    diff = paired_difference(treated, control, key)
    if diff is None:
        return None
    diff["per_seed"] = seed_differences(treated, control, key)
    diff["resolution"], diff["floored"] = resolution, False
    if diff["low"] is not None and (diff["high"] - diff["low"]) / 2 < resolution:
        diff["low"], diff["high"], diff["floored"] = diff["mean"] - resolution, diff["mean"] + resolution, True
    for bound in ("low", "high"):  # k/N − j/N is not exactly (k − j)/N in floats: a bound on zero is zero
        if diff[bound] is not None and abs(diff[bound]) < 1e-12:
            diff[bound] = 0.0
    return diff
