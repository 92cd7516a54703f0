"""Run several methods over seeds and fusions and tabulate them like the paper's Tables I–III.

The run folder is the cache: a run whose `summary.json` exists with the same configuration is read,
not retrained; an interrupted run resumes from its `last.pt`. So an interrupted comparison continues
where it stopped when the same command is given again.

Layout under `out`: `<method>-<fusion>/seed<k>/` for multimodal methods and `unimodal-<m>/seed<k>/`
for the unimodal references (shared by both fusions); `results.md`, `results.csv`, and per fusion
`bars-<fusion>.png` and `dynamics-<fusion>.png` (vanilla vs MILES, seed 0).
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from .config import TrainConfig
from .datasets import load_dataset
from .errors import UserError
from .methods import BASELINES, MAIN_METHODS, METHODS
from .metrics import METRIC_LABELS, task_of
from .runs import finished_summary, history_metric, read_history
from .train import train

ALL_METHODS = MAIN_METHODS + BASELINES


def run_dir(out: Path, method: str, fusion: str, seed: int) -> Path:
    name = method if method.startswith("unimodal-") else f"{method}-{fusion}"
    return Path(out) / name / f"seed{seed}"


def run_or_reuse(config: TrainConfig, folder: Path, dataset=None, progress: bool = True) -> dict:
    """The summary of `config` in `folder`: read if finished with this configuration, else trained
    (resuming a checkpoint if one is there)."""
    folder = Path(folder)
    summary = finished_summary(folder, config.to_dict())
    if summary is not None:
        return summary
    return train(config, folder, resume=(folder / "last.pt").exists(), dataset=dataset, progress=progress)


def load_summaries(out, method: str, fusion: str, seeds: int) -> list[dict]:
    """The summary.json of each seed of one method in a comparison folder."""
    return [json.loads((run_dir(out, method, fusion, seed) / "summary.json").read_text()) for seed in range(seeds)]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(summaries: dict[str, list[dict]], modalities, prefix: str = "", metric: str | None = None) -> list[dict]:
    """One row per method: mean and std over seeds of the test fusion metric (`fusion_*`), each
    modality's (`<m>_*`) and Δ = |M_A − M_B| (`delta_*`). `prefix` picks which epoch's test metrics:
    "" (selected), "strict_" or "last_". `metric` defaults to the runs' headline (accuracy, or
    micro-F1 on multi-label data); "f1macro" reads the other F1. Unimodal rows fill only their modality."""
    rows = []
    for method, runs in summaries.items():
        name = metric or history_metric(runs[0])
        row = {"method": method, "seeds": len(runs), "metric": name}
        only = method.removeprefix("unimodal-") if method.startswith("unimodal-") else None
        row["fusion_mean"], row["fusion_std"] = (None, None) if only else \
            _mean_std([r[f"{prefix}test_{name}_fusion"] for r in runs])
        for m in modalities:
            if only and m != only:
                row[f"{m}_mean"], row[f"{m}_std"] = None, None
            else:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([r[f"{prefix}test_{name}_{m}"] for r in runs])
        if only or len(modalities) != 2:
            row["delta_mean"], row["delta_std"] = None, None
        else:
            a, b = modalities
            row["delta_mean"], row["delta_std"] = _mean_std(
                [abs(r[f"{prefix}test_{name}_{a}"] - r[f"{prefix}test_{name}_{b}"]) for r in runs])
        rows.append(row)
    return rows


def _cell(row: dict, key: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    return "–" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(rows: list[dict], modalities) -> str:
    header = ["method", "multimodal", *modalities, "Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"], _cell(row, "fusion"), *[_cell(row, m) for m in modalities], _cell(row, "delta")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def weak_modality(rows: list[dict], modalities) -> str | None:
    """The modality whose unimodal reference scores lower (None without both references)."""
    uni = {m: r[f"{m}_mean"] for r in rows for m in modalities if r["method"] == f"unimodal-{m}"}
    return min(uni, key=uni.get) if len(uni) == len(modalities) else None


def decomposition(rows: list[dict], modalities) -> str:
    """Sentences splitting the weak modality's gain into the auxiliary losses' and the scheduler's."""
    weak = weak_modality(rows, modalities)
    by = {r["method"]: r for r in rows}
    if weak is None or not all(k in by for k in ("vanilla", "aux", "miles")):
        return ""
    uni, van = by[f"unimodal-{weak}"][f"{weak}_mean"], by["vanilla"][f"{weak}_mean"]
    aux, mil = by["aux"][f"{weak}_mean"], by["miles"][f"{weak}_mean"]
    gap = uni - van
    share = (lambda x: f" ({100 * x / gap:.0f} % of the gap)") if gap > 0 else (lambda x: "")
    return (f"Weak modality: **{weak}** (unimodal {100 * uni:.1f} %). Vanilla's {weak} reading is "
            f"{100 * van:.1f} %, {100 * gap:.1f} points below its unimodal model. The auxiliary losses "
            f"alone (`aux` − `vanilla`) move it by {100 * (aux - van):+.1f} points{share(aux - van)}; the "
            f"scheduling (`miles` − `aux`) by {100 * (mil - aux):+.1f} points{share(mil - aux)}; "
            f"MILES ends {100 * (uni - mil):.1f} points below the unimodal model.")


def expand_methods(methods) -> list[str]:
    """Method names, with "all" standing for vanilla, aux, miles and the seven baselines."""
    names = []
    for m in methods:
        for name in (ALL_METHODS if m == "all" else [m]):
            if name not in names:
                names.append(name)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; choose from: all, {', '.join(METHODS)}")
    return names


def unimodal_lr_search(base: TrainConfig, data, out: Path, progress: bool = True,
                       factors=(1 / 3, 1.0, 3.0)) -> dict:
    """Each modality's best unimodal learning rate (highest validation metric at its selected epoch,
    seed 0) over `factors` × the global rate — what MSLR-K/S start from. Runs are cached like any other."""
    grid = [base.lr * f for f in factors]
    best = {}
    for m in data.modalities:
        scores = {}
        for lr in grid:
            config = replace(base, method=f"unimodal-{m}", lr=lr, seed=0)
            folder = run_dir(out, f"unimodal-{m}", "concat", 0) if lr == base.lr else \
                Path(out) / "lr-search" / f"unimodal-{m}-lr{lr:.3g}"
            summary = run_or_reuse(config, folder, data, progress)
            scores[lr] = summary[f"best_val_{history_metric(summary)}_fusion"]
        best[m] = max(grid, key=lambda lr: (scores[lr], lr == base.lr))
    return {"grid": grid, "best": best}


def compare(dataset: str = "digits-av", methods=MAIN_METHODS, fusions=("concat",), seeds: int = 3,
            out="runs/compare", base: TrainConfig | None = None, progress: bool = True) -> dict:
    """Train (or reuse) every method × fusion × seed plus the unimodal references, write the report
    and return {fusion: {"rows", "strict_rows", "last_rows", "markdown"}}."""
    out = Path(out)
    base = replace(base or TrainConfig(), dataset=dataset)
    data = load_dataset(dataset, **base.dataset_options)
    modalities = data.modalities
    task = task_of(data.task)
    label = METRIC_LABELS[task.headline]
    methods = expand_methods(methods)
    references = [f"unimodal-{m}" for m in modalities]
    search_note = ""
    if any(m.startswith("mslr-") for m in methods) and not base.mslr_lrs:
        rates = unimodal_lr_search(base, data, out, progress)
        search_note = (f"MSLR rates: each modality's best unimodal rate on validation over "
                       f"{sorted(rates['grid'])} (seed 0): {rates['best']}.")
        base_mslr = replace(base, mslr_lrs=rates["best"])
    else:
        base_mslr = base
    report, csv_rows = {}, []
    md = [f"# Results on {dataset}", "",
          f"Test {label} (%), mean ± std over {seeds} seeds, at the epoch chosen on validation "
          f"({base.selection_tolerance} tolerance rule, see `milesbook.runs`). {base.epochs} epochs, "
          f"{base.optimizer} lr {base.lr}, batch {base.batch_size}, encoder {base.encoder}; MILES τ = {base.tau}, "
          f"μ = {base.mu}, utilization from the {base.utilization_split} split. Δ = |M_{modalities[0]} − "
          f"M_{modalities[-1]}|. Dataset: {data.description}.", ""]
    if search_note:
        md += [search_note, ""]
    bar = tqdm(total=len(fusions) * (len(references) + len(methods)) * seeds, desc="runs",
               **({} if progress else {"disable": True}))
    for fusion in fusions:
        summaries = {}
        for method in [*references, *methods]:
            summaries[method] = []
            for seed in range(seeds):
                bar.set_postfix_str(f"{method} {fusion} seed {seed}")
                config = replace(base_mslr if method.startswith("mslr-") else base, method=method,
                                 fusion=fusion if method in methods else "concat", seed=seed)
                summaries[method].append(run_or_reuse(config, run_dir(out, method, fusion, seed), data, progress))
                bar.update()
        tables = {p: summarize(summaries, modalities, p) for p in ("", "strict_", "last_")}
        text = markdown_table(tables[""], modalities)
        report[fusion] = {"rows": tables[""], "strict_rows": tables["strict_"], "last_rows": tables["last_"],
                          "markdown": text, "decomposition": decomposition(tables[""], modalities)}
        md += [f"## {fusion} fusion", "", text, "", report[fusion]["decomposition"], ""]
        for other in task.metrics[1:]:  # multi-label: macro-F1 beside the headline micro-F1
            report[fusion][f"{other}_rows"] = summarize(summaries, modalities, "", other)
            md += [f"The same runs in {METRIC_LABELS[other]} (%):", "",
                   markdown_table(report[fusion][f"{other}_rows"], modalities), ""]
        if "gblend" in methods:
            extra = [read_history(run_dir(out, "gblend", fusion, s))[-1]["gblend_extra_epochs"] for s in range(seeds)]
            report[fusion]["gblend_extra_epochs"] = extra
            md += [f"G-Blend's weight estimation trained {int(max(extra))} extra epochs per run on top of "
                   f"the {base.epochs} counted above (mode {base.gblend_mode}, every {base.gblend_every} epochs, "
                   f"{base.gblend_epochs} per head).", ""]
        weak = weak_modality(tables[""], modalities)
        if weak:
            md += [f"The weak modality ({weak}) at three choices of epoch:", "",
                   f"| method | selected (tolerance rule) | strict (highest val {label}) | last epoch |",
                   "|---|---|---|---|"]
            for sel, strict, last in zip(tables[""], tables["strict_"], tables["last_"]):
                if sel.get(f"{weak}_mean") is not None:
                    md.append(f"| {sel['method']} | {_cell(sel, weak)} | {_cell(strict, weak)} | {_cell(last, weak)} |")
            if "vanilla" in summaries:
                probe = _mean_std([r[f"test_{task.headline}_head_{weak}"] for r in summaries["vanilla"]])
                md += ["", f"Vanilla's {weak} encoder read by a detached linear probe (trained on its features, "
                           f"never moving it): {100 * probe[0]:.1f} ± {100 * probe[1]:.1f} % — the encoder "
                           "itself is starved, not only the fusion head's use of it."]
            md.append("")
        for prefix, rows in tables.items():
            for row in rows:
                csv_rows.append({"fusion": fusion, "epoch_choice": prefix.rstrip("_") or "selected", **row})
        _draw(out, fusion, tables[""], modalities, base)
        md += [f"![bars](bars-{fusion}.png)", f"![dynamics](dynamics-{fusion}.png)", ""]
    bar.close()
    (out / "results.md").write_text("\n".join(md))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    return report


def sweep(base: TrainConfig, grid: list[dict], seeds: int, out, data=None, progress: bool = True) -> list[dict]:
    """Train (or reuse) `base` with each override of `grid` (e.g. [{"tau": 0.1}, {"tau": 0.2}]) over
    `seeds` seeds. One row per grid point: the overrides, `runs` (the run folders), and the mean and
    std over seeds of the test fusion metric (`fusion_*`), each modality's (`<m>_*`) and Δ."""
    data = data if data is not None else load_dataset(base.dataset, **base.dataset_options)
    rows = []
    for overrides in grid:
        config = replace(base, **overrides)
        tag = "-".join(f"{k}{v}" for k, v in overrides.items()) or "base"
        folders = [Path(out) / "sweeps" / f"{config.method}-{config.fusion}-{config.epochs}ep-{tag}" / f"seed{seed}"
                   for seed in range(seeds)]
        summaries = [run_or_reuse(replace(config, seed=seed), folder, data, progress)
                     for seed, folder in enumerate(folders)]
        row = summarize({config.method: summaries}, data.modalities)[0]
        rows.append({**overrides, **{k: v for k, v in row.items() if k != "method"}, "runs": folders})
    return rows


def _draw(out: Path, fusion: str, rows, modalities, base: TrainConfig) -> None:
    import matplotlib.pyplot as plt

    from .plots import plot_learning_dynamics, plot_result_bars
    ax = plot_result_bars(rows, modalities, title=f"{base.dataset}, {fusion} fusion")
    ax.figure.savefig(out / f"bars-{fusion}.png", dpi=110)
    plt.close(ax.figure)
    shown = [m for m in ("vanilla", "miles") if (run_dir(out, m, fusion, 0) / "history.csv").exists()]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 3, figsize=(14, 3.4 * len(shown)), squeeze=False)
    for method, row_axes in zip(shown, axes):
        plot_learning_dynamics(read_history(run_dir(out, method, fusion, 0)), modalities,
                               title=None, tau=base.tau if method == "miles" else None, axes=row_axes)
        row_axes[0].set_title(f"{method}: utilization")
    fig.tight_layout()
    fig.savefig(out / f"dynamics-{fusion}.png", dpi=110)
    plt.close(fig)
