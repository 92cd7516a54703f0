"""Figures drawn from run folders: MILES's learning dynamics (the paper's Fig. 2), utilization rates,
results over seeds, sweeps, τ × μ grids and searches. Every figure shares one theme (seaborn's
"whitegrid" with `STYLE` on top, set by `use_style()` or inside `book_style()`) and one colour per
modality (`colour`), the fusion head in black, and integer epoch axes. Axes are labelled with the
run's metric: accuracy, or micro-F1 on multi-label data."""
from __future__ import annotations

import functools
import zlib

import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .methods import report_name, unimodal_modality
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

# The width of a book page's text column, in inches of a figure drawn at `figure.dpi`: a figure no wider
# is shown at its own size, so no text falls below the style's smallest size, MIN_FONT_PT (10 pt).
PAGE_WIDTH_IN = 7.5
MIN_FONT_PT = 10
# Readable at page width; light grid, no top/right frame.
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": MIN_FONT_PT,
         "xtick.labelsize": MIN_FONT_PT, "ytick.labelsize": MIN_FONT_PT, "figure.titlesize": 12,
         "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "legend.frameon": False,
         "lines.linewidth": 1.6, "figure.dpi": 100}
GREEK = {"tau": "τ", "mu": "μ"}


def colour(name: str) -> str:
    """The colour of a modality (or "fusion") in every figure."""
    if name == "fusion":
        return FUSION_COLOUR
    return MODALITY_COLOURS.get(name) or _SPARE_COLOURS[zlib.crc32(name.encode()) % len(_SPARE_COLOURS)]


# On matplotlib's defaults, whatever style the session switched to: seaborn's whitegrid theme at
# notebook scale, then ours.
BOOK_STYLE = ["default", dict(sns.axes_style("whitegrid")), dict(sns.plotting_context("notebook")), STYLE]


def use_style() -> None:
    """The one call that gives every later figure the book's theme (the package's figures use it anyway)."""
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


def one_legend_per_row(axes) -> None:
    """Panels side by side at page width: each row's legend once, under its last panel in one column
    (the others would overlap), and few enough epoch ticks to stay apart."""
    for r, row in enumerate(axes):
        for c, ax in enumerate(row):
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            if c > 0:
                ax.set_ylabel("")
            if r < len(axes) - 1:
                ax.set_xlabel("")
        handles, labels = row[-1].get_legend_handles_labels()
        row[-1].legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.3 if r == len(axes) - 1 else -0.08),
                       ncol=1)


def _spread(row: dict, key: str) -> float | None:
    """The std over seeds to draw as an error bar: None with a single seed (there is no spread)."""
    return 100 * row[f"{key}_std"] if row.get("seeds", 2) > 1 and row.get(f"{key}_std") is not None else None


def _plot_utilization(ax, history: list[dict], modalities, tau: float | None = None) -> None:
    epochs = [row["epoch"] for row in history]
    ax.axhline(0, color="0.75", lw=0.8, zorder=0)
    # δ as a grey band behind the rates: a line on top would hide the u curves it is computed from.
    gap = "δ" if len(modalities) == 2 else "δ = max u − min u"
    ax.fill_between(epochs, 0, [row["delta"] for row in history], color="0.85", zorder=1, label=gap)
    for m in modalities:
        ax.plot(epochs, [row[f"u_{m}"] for row in history], color=colour(m), marker="o", ms=3, zorder=3,
                label=f"u_{m}")
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
    own = axes is None
    if own:  # stacked, at a page's width: side by side, three panels shrink to unreadable fonts
        _, axes = plt.subplots(3, 1, figsize=(7, 9.5))
    epochs = [row["epoch"] for row in history]
    _plot_utilization(axes[0], history, modalities, tau)
    axes[0].set_title("utilization")
    _legend_below(axes[0])
    ax = axes[1]
    edges = [epochs[0] - 1, *epochs]  # epoch e trains between e − 1 and e on this axis
    # The fusion head's rate as a wide pale band underneath, each encoder's on top in its own colour and
    # dash: rates that coincide (an encoder at the global rate) stay visible.
    ax.stairs([row["lr_fusion"] for row in history], edges, baseline=None, color="0.8", lw=5, zorder=1,
              label="lr fusion")
    for m, dash in zip(modalities, ["-", "--", ":", "-."] * len(modalities)):
        ax.stairs([row[f"lr_{m}"] for row in history], edges, baseline=None, color=colour(m), lw=1.8, ls=dash,
                  zorder=3, label=f"lr {m}")
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
    if own:  # a caller that gave the axes lays out its whole figure once
        axes[0].figure.tight_layout()
    return axes


@_styled
def plot_utilization(histories: dict[str, list[dict]], modalities):
    """One panel per run, at most two a row so the page does not shrink them: u_m and δ over epochs on
    a shared y axis. `histories`: {label: read_history(run)}. Returns the panels in order."""
    columns = min(2, len(histories))
    rows = -(-len(histories) // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(PAGE_WIDTH_IN, 3.6 * rows + 0.6), sharey=True, squeeze=False)
    axes = list(grid.flat)
    for ax, (label, history) in zip(axes, histories.items()):
        _plot_utilization(ax, history, modalities)
        ax.set_title(label)
    for ax in axes[len(histories):]:
        ax.remove()
    axes = axes[:len(histories)]
    for k, ax in enumerate(axes):
        ax.set_ylabel("conditional utilization" if k % columns == 0 else "")
    _legend_below(axes[-1])
    fig.tight_layout()
    return axes


@_styled
def plot_result_bars(table: list[dict], modalities, title: str = "", ax=None):
    """Grouped bars of the test metric per method: fusion and each modality, centred on the method
    (a unimodal row has one bar), with the std over seeds as error bars when there are several seeds.
    `table` is `comparison.summarize(...)`'s rows."""
    if ax is None:
        _, ax = plt.subplots(figsize=(min(0.9 * len(table) + 3, PAGE_WIDTH_IN), 3.8))  # page width at most
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
    many = len(table) > 4  # slanted names would overlap: stand them on end
    ax.set_xticks(range(len(table)), [report_name(row["method"]) for row in table], rotation=90 if many else 20,
                  ha="center" if many else "right")
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
    ax.margins(y=0.12)  # no line on the edge of the axes
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax


@_styled
def plot_search_histories(searches: dict[str, list[dict]], ax=None):
    """Each search's validation fusion value per complete trial (dots, in draw order) and the best so
    far (a step line). `searches`: {method or search folder ("miles-concat"): rows of its trials.csv}."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    # Sixteen colours cannot be told apart: the 2 × 2 in four distinct colours, every other search grey.
    highlighted = dict(zip(("vanilla", "miles-lab", "aux", "miles"), ("#000000", "#56B4E9", "#E69F00", "#D55E00")))
    others = False
    for method, rows in searches.items():
        done = sorted((int(r["draw"]), float(r["value"])) for r in rows if r["state"] == "COMPLETE")
        if not done:
            continue
        draws, values = zip(*done)
        best = [max(values[:i + 1]) for i in range(len(values))]
        shown = highlighted.get(_method_of_search(method))
        label = method if shown else (None if others else "other methods")
        others |= shown is None
        ax.step(draws, [100 * v for v in best], where="post", label=label, color=shown or "0.7",
                lw=2.2 if shown else 1.0, zorder=3 if shown else 2)
        if shown:
            ax.plot(draws, [100 * v for v in values], ".", color=shown, alpha=0.5, zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="draw", ylabel="validation fusion metric (%)", title="search: each draw (dots), best so far (line)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, off the dots
    ax.figure.tight_layout()
    return ax


def _method_of_search(name: str) -> str:
    """The method a search folder is named after: "miles-concat" → "miles" (a method name stays itself)."""
    from .models import FUSIONS
    for fusion in FUSIONS:
        name = name.removesuffix(f"-{fusion}")
    return name


@_styled
def plot_best_of_n(result: dict, reading: str | None = None, ax=None):
    """Per method, the chosen trial's own test score (the paper's single number, ×) beside the test
    mean over fresh seeds with its 95 % t-interval — how much best-of-N selection flatters one run — and
    the modality's unimodal model as a dashed line. `result`: one fusion's entry of a tuned report.json
    (`report["fusion_results"][fusion]`); `reading`: "fusion" or a modality, by default the weak one."""
    from .errors import UserError
    from .methods import unimodal_name
    from .seed_stats import t_interval
    reading = reading or result["weak"]
    methods = {m: e for m, e in result["methods"].items() if "best_trial" in e and reading in e["values"]}
    if not methods:
        raise UserError(f"no method in this report has its chosen trial's {reading} reading: re-make the report "
                        "with `milesbook compare --from-search SEARCH_DIR`")
    if ax is None:  # one row per method, readable at page width however many methods there are
        _, ax = plt.subplots(figsize=(6.5, 0.34 * len(methods) + 1.6))
    for y, entry in enumerate(methods.values()):
        values = [100 * v for v in entry["values"][reading]]
        mean, interval = sum(values) / len(values), t_interval(values)
        error = None if interval is None else [[mean - max(interval[0], 0.0)], [min(interval[1], 100.0) - mean]]
        ax.errorbar([mean], [y], xerr=error, fmt="o", color="black", capsize=3,  # no interval past 0 or 100 %
                    label="fresh seeds: mean, 95 % CI" if y == 0 else None)
        ax.plot([100 * entry["best_trial"][reading]], [y], "x", color="#D55E00", ms=8, mew=2,
                label="best trial (paper's protocol)" if y == 0 else None)
    alone = result["methods"].get(unimodal_name(reading), {}).get("values", {}).get(reading)
    if alone:
        ax.axvline(100 * sum(alone) / len(alone), color=colour(reading), ls="--", lw=1.5,
                   label=f"{reading} alone (fresh seeds)")
    ax.set_yticks(range(len(methods)), [report_name(m) for m in methods])
    ax.invert_yaxis()  # the table's order, top to bottom
    where = "fused" if reading == "fusion" else reading
    ax.set(xlabel=f"test {METRIC_LABELS[result['metric']]}, {where} (%)", title="one chosen run vs fresh seeds")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6 / (0.34 * len(methods) + 0.2)), ncol=2)
    ax.figure.tight_layout()
    return ax


@_styled
def plot_results(summaries: dict[str, list[dict]], modalities, title: str = "", ax=None):
    """Test metric per method for the fusion head and each modality: every seed as a point, with the
    mean and its 95 % interval over seeds (seaborn's bootstrap interval; no interval with one seed).
    `summaries`: {method: the summaries of its runs}, as `compare` returns them under "summaries"."""
    import pandas as pd
    from .runs import history_metric
    metric = history_metric(next(iter(summaries.values()))[0])
    records = []
    for method, runs in summaries.items():
        only = unimodal_modality(method)
        for run in runs:
            for reading in (["fusion"] if not only else []) + [m for m in modalities if only in (None, m)]:
                records.append({"method": report_name(method), "reading": reading, "seed": run["seed"],
                                "value": 100 * run[f"test_{metric}_{reading}"]})
    frame = pd.DataFrame(records)
    order = ["fusion", *modalities]
    palette = {r: colour(r) for r in order}
    horizontal = len(summaries) > 3  # more methods: one row each, so that no two names overlap
    axes = {"x": "value", "y": "method"} if horizontal else {"x": "method", "y": "value"}
    if ax is None:
        _, ax = plt.subplots(figsize=(5.8, 0.45 * len(summaries) + 1.3) if horizontal else
                             (min(0.75 * len(summaries) + 2.5, 6.3), 3.8))
    sns.stripplot(frame, **axes, hue="reading", hue_order=order, palette=palette, dodge=True,
                  alpha=0.45, size=3.5, legend=False, ax=ax)
    several = frame.groupby(["method", "reading"])["seed"].nunique().max() > 1
    sns.pointplot(frame, **axes, hue="reading", hue_order=order, palette=palette, dodge=0.53,
                  errorbar=("ci", 95) if several else None, linestyle="none", markers="D", markersize=5,
                  capsize=0.08, ax=ax)
    label = f"test {METRIC_LABELS[metric]} (%)"
    ax.set(xlabel=label if horizontal else "", ylabel="" if horizontal else label, title=title)
    if not horizontal:
        ax.tick_params(axis="x", rotation=20)
        for tick in ax.get_xticklabels():
            tick.set_ha("right")
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax


@_styled
def plot_grid_heatmap(rows: list[dict], x: str, y: str, value: str, label: str, ax=None, fmt: str = ".1f",
                      scale: float = 100.0, reference: float | None = None, span: float | None = None):
    """A τ × μ (or any two-knob) grid as a heatmap: `rows` of `comparison.sweep` (or dicts) holding `x`,
    `y` and `value`, each cell annotated with value × `scale`. With a `reference` (in the same units as
    the annotations, e.g. MILES switched off), the colours diverge around it over at least ±`span`, so a
    difference smaller than the seed noise stays pale instead of spanning the whole colour bar."""
    import pandas as pd
    frame = pd.DataFrame([{x: r[x], y: r[y], "value": scale * r[value]} for r in rows])
    table = frame.pivot_table(index=y, columns=x, values="value")
    if ax is None:
        _, ax = plt.subplots(figsize=(min(0.9 * len(table.columns) + 2.4, PAGE_WIDTH_IN),
                                      0.6 * len(table.index) + 1.8))
    colours = {"cmap": "viridis"}
    if reference is not None:
        reach = max(float((table - reference).abs().max().max()), span or 0.0)
        colours = {"cmap": "RdBu_r", "center": reference, "vmin": reference - reach, "vmax": reference + reach}
        label = f"{label}\n(white: {reference:{fmt}})"
    sns.heatmap(table, annot=True, fmt=fmt, cbar_kws={"label": label}, ax=ax, annot_kws={"size": MIN_FONT_PT},
                **colours)
    ax.set(xlabel=GREEK.get(x, x), ylabel=GREEK.get(y, y))
    ax.invert_yaxis()
    ax.figure.tight_layout()
    return ax


@_styled
def plot_forest(effects: dict[str, dict[str, list[tuple[str, dict | None]]]]):
    """A forest plot: for each setting (a column of panels) and reading (a row: "fusion", then a
    modality), each method's paired effect against vanilla in points, its mean and 95 % interval, with
    zero marked. `effects`: {setting: {reading: [(method, difference or None)]}} (`claims.forest`)."""
    settings = list(effects)
    readings = list(dict.fromkeys(r for by in effects.values() for r in by))
    methods = list(dict.fromkeys(m for by in effects.values() for rows in by.values() for m, _ in rows))
    fig, axes = plt.subplots(len(readings), len(settings), squeeze=False, sharey=True,
                             figsize=(PAGE_WIDTH_IN, 0.3 * len(methods) * len(readings) + 1.8))
    ys = {m: i for i, m in enumerate(methods)}
    for col, setting in enumerate(settings):
        for row, reading in enumerate(readings):
            ax = axes[row][col]
            for method, d in effects[setting].get(reading, []):
                if d is None:
                    continue
                mean = 100 * d["mean"]
                err = None if d["low"] is None else [[mean - 100 * d["low"]], [100 * d["high"] - mean]]
                ax.errorbar([mean], [ys[method]], xerr=err, fmt="o", color=colour(reading), capsize=2.5, ms=4)
            ax.axvline(0, color="grey", lw=1)
            ax.set_yticks(range(len(methods)), methods)
            ax.set_title(f"{setting}:\n{'fused' if reading == 'fusion' else reading}")  # a long setting name wraps
            ax.set_xlabel("minus vanilla (points)")
    axes[0][0].invert_yaxis()  # the report's order, top to bottom
    fig.tight_layout()
    return axes
