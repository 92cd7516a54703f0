"""Figures drawn from run folders: MILES's learning dynamics (the paper's Fig. 2), utilization rates,
result bars, sweeps and searches. Every figure shares one style (`STYLE`) and one colour per modality
(`colour`), the fusion head in black, and integer epoch axes. Axes are labelled with the run's
metric: accuracy, or micro-F1 on multi-label data."""
from __future__ import annotations

import functools
import zlib

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
from matplotlib.ticker import MaxNLocator

from .methods import report_name
from .metrics import METRIC_LABELS

# Okabe–Ito colours (distinguishable with colour-blindness), one per modality of our datasets; the
# fusion head is black everywhere. Unknown modalities take a spare colour chosen by name, so a
# modality keeps its colour from figure to figure.
MODALITY_COLOURS = {"image": "#0072B2", "audio": "#E69F00", "video": "#009E73", "text": "#CC79A7",
                    "a": "#56B4E9", "b": "#D55E00", "c": "#009E73", "d": "#CC79A7",
                    # the six mfeat views (its default three: pixel, fourier, morphology)
                    "pixel": "#0072B2", "fourier": "#E69F00", "morphology": "#CC79A7", "karhunen": "#56B4E9",
                    "profile": "#D55E00", "zernike": "#009E73"}
FUSION_COLOUR = "black"
_SPARE_COLOURS = ["#F0E442", "#882255", "#44AA99", "#999933", "#332288", "#AA4499"]

# Readable at notebook width; light grid, no top/right frame.
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "legend.frameon": False,
         "lines.linewidth": 1.6, "figure.dpi": 100}
GREEK = {"tau": "τ", "mu": "μ"}


def colour(name: str) -> str:
    """The colour of a modality (or "fusion") in every figure."""
    if name == "fusion":
        return FUSION_COLOUR
    return MODALITY_COLOURS.get(name) or _SPARE_COLOURS[zlib.crc32(name.encode()) % len(_SPARE_COLOURS)]


BOOK_STYLE = ["default", STYLE]  # on matplotlib's defaults, whatever style the session switched to


def use_style() -> None:
    """Apply the book's figure style to every later matplotlib figure (the package's figures use it anyway)."""
    plt.style.use(BOOK_STYLE)


def book_style():
    """A context in which figures get the book's style, leaving the caller's matplotlib settings alone."""
    return plt.style.context(BOOK_STYLE)


def _styled(draw):
    """Draw inside `book_style()`."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with book_style():
            return draw(*args, **kwargs)
    return wrapper


def _epoch_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _legend_below(ax) -> None:
    """The panel's legend under its epoch axis, in columns, so it never covers a line (the curves of a
    dynamics panel fill the whole plot, and several panels stand side by side)."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(labels)))


def _spread(row: dict, key: str) -> float | None:
    """The std over seeds to draw as an error bar: None with a single seed (there is no spread)."""
    return 100 * row[f"{key}_std"] if row.get("seeds", 2) > 1 and row.get(f"{key}_std") is not None else None


def _plot_utilization(ax, history: list[dict], modalities, tau: float | None = None) -> None:
    epochs = [row["epoch"] for row in history]
    ax.axhline(0, color="0.75", lw=0.8, zorder=0)
    for m in modalities:
        ax.plot(epochs, [row[f"u_{m}"] for row in history], color=colour(m), label=f"u_{m}")
    gap = "δ" if len(modalities) == 2 else "δ = max u − min u"
    ax.plot(epochs, [row["delta"] for row in history], color=FUSION_COLOUR, ls="--", label=gap)
    if tau is not None:  # above the zero line, so τ = 0 stays visible
        ax.axhline(tau, color="0.35", lw=1.4, ls="-.", zorder=3, label=f"τ = {tau:g}")
    _epoch_axis(ax)
    ax.set(ylabel="conditional utilization")


@_styled
def plot_learning_dynamics(history: list[dict], modalities, title: str = "", tau: float | None = None,
                           axes=None):
    """Three panels over epochs: utilization u_m and δ (with τ), each encoder's learning rate (a step
    per epoch: the rate used from the epoch's start to its end), and the validation metric of the fusion
    head and each modality. `history` is `read_history(run)`."""
    from .runs import history_metric
    metric = history_metric(history[0])
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    epochs = [row["epoch"] for row in history]
    _plot_utilization(axes[0], history, modalities, tau)
    axes[0].set_title("utilization")
    _legend_below(axes[0])
    ax = axes[1]
    edges = [epochs[0] - 1, *epochs]  # epoch e trains between e − 1 and e on this axis
    for m in modalities:
        ax.stairs([row[f"lr_{m}"] for row in history], edges, baseline=None, color=colour(m), lw=1.6,
                  label=f"lr {m}")
    ax.stairs([row["lr_fusion"] for row in history], edges, baseline=None, color=FUSION_COLOUR, ls=":",
              lw=1.6, label="lr fusion")
    top = max(row[f"lr_{m}"] for row in history for m in [*modalities, "fusion"])
    _epoch_axis(ax)
    ax.set(ylabel="learning rate", title="rate used in each epoch", ylim=(0, 1.1 * top))
    _legend_below(ax)
    ax = axes[2]
    ax.plot(epochs, [row[f"val_{metric}_fusion"] for row in history], color=FUSION_COLOUR, label="fusion")
    for m in modalities:
        ax.plot(epochs, [row[f"val_{metric}_{m}"] for row in history], color=colour(m), label=m)
    _epoch_axis(ax)
    ax.set(ylabel=f"validation {METRIC_LABELS[metric]}", title="heads", ylim=(0, 1.02))
    _legend_below(ax)
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


@_styled
def plot_utilization(histories: dict[str, list[dict]], modalities):
    """One panel per run: u_m and δ over epochs on a shared y axis. `histories`: {label: read_history(run)}."""
    fig, axes = plt.subplots(1, len(histories), figsize=(5.5 * len(histories), 4.0), sharey=True, squeeze=False)
    for ax, (label, history) in zip(axes[0], histories.items()):
        _plot_utilization(ax, history, modalities)
        ax.set_title(label)
    for ax in axes[0][1:]:
        ax.set_ylabel("")
    axes[0][0].set_ylabel("conditional utilization")
    _legend_below(axes[0][0])
    fig.tight_layout()
    return axes[0]


@_styled
def plot_result_bars(table: list[dict], modalities, title: str = "", ax=None):
    """Grouped bars of the test metric per method: fusion and each modality, centred on the method
    (a unimodal row has one bar), with the std over seeds as error bars when there are several seeds.
    `table` is `comparison.summarize(...)`'s rows."""
    if ax is None:
        _, ax = plt.subplots(figsize=(min(0.9 * len(table) + 3, 13), 3.6))  # notebook width at most
    columns = ["fusion", *modalities]
    width = 0.8 / len(columns)
    labelled = set()
    for i, row in enumerate(table):
        present = [c for c in columns if row.get(f"{c}_mean") is not None]
        for k, column in enumerate(present):
            spread = _spread(row, column)
            ax.bar(i + (k - (len(present) - 1) / 2) * width, 100 * row[f"{column}_mean"], width,
                   yerr=spread, capsize=2 if spread is not None else 0, color=colour(column),
                   label=None if column in labelled else column)
            labelled.add(column)
    ax.set_xticks(range(len(table)), [report_name(row["method"]) for row in table], rotation=20, ha="right")
    ax.set(ylabel=f"test {METRIC_LABELS[table[0].get('metric', 'acc')]} (%)", ylim=(0, 105), title=title)
    ax.grid(axis="x", visible=False)
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    ax.legend([handles[c] for c in columns if c in handles], [c for c in columns if c in handles],
              loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: never over a bar
    ax.figure.tight_layout()
    return ax


@_styled
def plot_sweep_point(row: dict, modalities, ax_row=None):
    """The learning dynamics of one setting of a `comparison.sweep` grid (its first seed), titled with its
    test accuracies — what the τ/μ sliders of notebook 03 redraw."""
    from .runs import read_history
    history = read_history(row["runs"][0])
    accuracies = ", ".join(f"{m} {100 * row[f'{m}_mean']:.1f} %" for m in ["fusion", *modalities])
    setting = ", ".join(f"{GREEK[k]} = {row[k]:g}" for k in ("tau", "mu") if k in row)
    axes = plot_learning_dynamics(history, modalities, tau=row.get("tau"), axes=ax_row)
    axes[0].figure.suptitle(f"{setting} — test {METRIC_LABELS[row.get('metric', 'acc')]}: {accuracies}")
    axes[0].figure.tight_layout()
    return axes


@_styled
def plot_sweep(rows: list[dict], key: str, modalities, ax=None, label: str | None = None):
    """Test metric of the fusion head and each modality against the swept hyper-parameter `key` (e.g.
    "tau"), from `comparison.sweep` rows: the mean over seeds, with the std as error bars when there are
    several seeds."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = [row[key] for row in rows]
    for column in ["fusion", *modalities]:
        spreads = [_spread(r, column) for r in rows]
        ax.errorbar(xs, [100 * r[f"{column}_mean"] for r in rows],
                    yerr=None if None in spreads else spreads, marker="o", capsize=3, color=colour(column),
                    label=column)
    ax.set_xticks(xs)
    ax.set(xlabel=label or GREEK.get(key, key), ylabel=f"test {METRIC_LABELS[rows[0].get('metric', 'acc')]} (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax


@_styled
def plot_search_histories(searches: dict[str, list[dict]], ax=None):
    """Each search's validation fusion value per complete trial (dots, in draw order) and the best so
    far (a step line). `searches`: {method: rows of its trials.csv}."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    # The default cycle has ten colours: with more searches, two would share one.
    colours = plt.get_cmap("tab20").colors if len(searches) > 10 else [None] * len(searches)
    for (method, rows), search_colour in zip(searches.items(), colours):
        done = sorted((int(r["draw"]), float(r["value"])) for r in rows if r["state"] == "COMPLETE")
        if not done:
            continue
        draws, values = zip(*done)
        best = [max(values[:i + 1]) for i in range(len(values))]
        line, = ax.step(draws, [100 * v for v in best], where="post", label=method, color=search_colour)
        ax.plot(draws, [100 * v for v in values], ".", color=line.get_color(), alpha=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="draw", ylabel="validation fusion metric (%)", title="search: each draw (dots), best so far (line)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, off the dots
    ax.figure.tight_layout()
    return ax


@_styled
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
    ax.set_xticks(list(xs), [report_name(r["method"]) for r in rows], rotation=20, ha="right")
    ax.set(ylabel="test fusion metric (%)", title="one chosen run vs fresh seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax
