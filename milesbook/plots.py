"""Figures drawn from run folders: MILES's learning dynamics (the paper's Fig. 2) and result bars.
Axes are labelled with the run's metric: accuracy, or micro-F1 on multi-label data."""
from __future__ import annotations

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves

from .metrics import METRIC_LABELS


def plot_learning_dynamics(history: list[dict], modalities, title: str = "", tau: float | None = None,
                           axes=None):
    """Three panels over epochs: utilization u_m and δ (with τ), each encoder's learning rate, and the
    validation metric of the fusion head and each modality. `history` is `read_history(run)`."""
    from .runs import history_metric
    metric = history_metric(history[0])
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    epochs = [row["epoch"] for row in history]
    ax = axes[0]
    for m in modalities:
        ax.plot(epochs, [row[f"u_{m}"] for row in history], label=f"u_{m}")
    ax.plot(epochs, [row["delta"] for row in history], "k--", label="δ")
    if tau is not None:
        ax.axhline(tau, color="grey", lw=0.8, ls=":", label=f"τ = {tau}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="epoch", ylabel="conditional utilization", title="utilization")
    ax.legend(fontsize=8)
    ax = axes[1]
    for m in modalities:
        ax.step(epochs, [row[f"lr_{m}"] for row in history], where="mid", label=f"lr {m}")
    ax.step(epochs, [row["lr_fusion"] for row in history], "k:", where="mid", label="lr fusion")
    top = max(row[f"lr_{m}"] for row in history for m in [*modalities, "fusion"])
    ax.set(xlabel="epoch", ylabel="learning rate", title="rates used in each epoch", ylim=(0, 1.1 * top))
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(epochs, [row[f"val_{metric}_fusion"] for row in history], "k", label="fusion")
    for m in modalities:
        ax.plot(epochs, [row[f"val_{metric}_{m}"] for row in history], label=m)
    ax.set(xlabel="epoch", ylabel=f"validation {METRIC_LABELS[metric]}", title="heads", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


def plot_result_bars(table: list[dict], modalities, title: str = "", ax=None):
    """Grouped bars of the test metric (mean ± std over seeds) per method: fusion and each modality.
    `table` is `comparison.summarize(...)`'s rows."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * len(table) + 2, 3.6))
    columns = ["fusion", *modalities]
    width = 0.8 / len(columns)
    for j, column in enumerate(columns):
        xs, means, stds = [], [], []
        for i, row in enumerate(table):
            if row.get(f"{column}_mean") is not None:
                xs.append(i + (j - (len(columns) - 1) / 2) * width)
                means.append(100 * row[f"{column}_mean"])
                stds.append(100 * row[f"{column}_std"])
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=column)
    ax.set_xticks(range(len(table)), [row["method"] for row in table], rotation=20)
    ax.set(ylabel=f"test {METRIC_LABELS[table[0].get('metric', 'acc')]} (%)", ylim=(0, 105), title=title)
    ax.legend(fontsize=8, ncols=len(columns))
    ax.figure.tight_layout()
    return ax


def plot_sweep_point(row: dict, modalities, ax_row=None):
    """The learning dynamics of one setting of a `comparison.sweep` grid (its first seed), titled with its
    test accuracies — what the τ/μ sliders of notebook 03 redraw."""
    from .runs import read_history
    history = read_history(row["runs"][0])
    accuracies = ", ".join(f"{m} {100 * row[f'{m}_mean']:.1f} %" for m in ["fusion", *modalities])
    setting = ", ".join(f"{k} = {row[k]}" for k in ("tau", "mu") if k in row)
    axes = plot_learning_dynamics(history, modalities, tau=row.get("tau"), axes=ax_row)
    axes[0].figure.suptitle(f"{setting} — test {METRIC_LABELS[row.get('metric', 'acc')]}: {accuracies}")
    axes[0].figure.tight_layout()
    return axes


def plot_sweep(rows: list[dict], key: str, modalities, ax=None, label: str | None = None):
    """Test accuracy (mean ± std over seeds) of the fusion head and each modality against the swept
    hyper-parameter `key` (e.g. "tau"), from `comparison.sweep` rows."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    xs = [row[key] for row in rows]
    for column in ["fusion", *modalities]:
        ax.errorbar(xs, [100 * r[f"{column}_mean"] for r in rows], yerr=[100 * r[f"{column}_std"] for r in rows],
                    marker="o", capsize=3, label=column)
    ax.set(xlabel=label or key, ylabel=f"test {METRIC_LABELS[rows[0].get('metric', 'acc')]} (%)")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def plot_search_histories(searches: dict[str, list[dict]], ax=None):
    """Each search's validation fusion value per complete trial (dots, in draw order) and the best so
    far (a step line). `searches`: {method: rows of its trials.csv}."""
    from matplotlib.ticker import MaxNLocator
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    # The default cycle has ten colours: with more searches, two would share one.
    colours = plt.get_cmap("tab20").colors if len(searches) > 10 else [None] * len(searches)
    for (method, rows), colour in zip(searches.items(), colours):
        done = sorted((int(r["draw"]), float(r["value"])) for r in rows if r["state"] == "COMPLETE")
        if not done:
            continue
        draws, values = zip(*done)
        best = [max(values[:i + 1]) for i in range(len(values))]
        line, = ax.step(draws, [100 * v for v in best], where="post", label=method, color=colour)
        ax.plot(draws, [100 * v for v in values], ".", color=line.get_color(), alpha=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="draw", ylabel="validation fusion metric (%)", title="search: each draw (dots), best so far (line)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, off the dots
    ax.figure.tight_layout()
    return ax


def plot_best_of_n(rows: list[dict], ax=None):
    """Per method, the chosen trial's own test score (the paper's single number, ×) beside the test
    mean over fresh seeds with its 95 % interval — how much best-of-N selection flatters one run.
    `rows`: `tuned.compare_tuned`'s results.csv rows (multimodal methods)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(rows) + 2, 3.6))
    xs = range(len(rows))
    means = [100 * float(r["test_mean"]) for r in rows]
    have_ci = all(r.get("ci_low") not in (None, "") for r in rows)
    if have_ci:
        lows = [m - 100 * float(r["ci_low"]) for m, r in zip(means, rows)]
        highs = [100 * min(float(r["ci_high"]), 1.0) - m for m, r in zip(means, rows)]  # no interval above 100 %
        ax.errorbar(xs, means, yerr=[lows, highs], fmt="o", color="black", capsize=3, label="fresh seeds: mean, 95 % CI")
    else:
        ax.plot(xs, means, "o", color="black", label="fresh seed")
    ax.plot(xs, [100 * float(r["best_trial_test"]) for r in rows], "x", color="tab:red", ms=8,
            label="best trial (paper's protocol)")
    ax.set_xticks(list(xs), [r["method"] for r in rows], rotation=20)
    ax.set(ylabel="test fusion metric (%)", title="one chosen run vs fresh seeds")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax
