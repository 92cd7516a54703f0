"""Run several methods over seeds and fusions and tabulate them like the paper's Tables I–III.

The run folder is the cache: a run whose `summary.json` exists with the same configuration is read,
not retrained; an interrupted run resumes from its `last.pt`. So an interrupted comparison continues
where it stopped when the same command is given again.

Layout under `out`: `<method>-<fusion>/seed<k>/` for multimodal methods and `unimodal-<m>/seed<k>/`
for the unimodal references (shared by both fusions); `results.md`, `results.csv`, and per fusion
`results-<fusion>.png` (every seed, mean and 95 % interval) and `dynamics-<fusion>.png` (vanilla,
miles-lab and MILES, seed 0).

The default methods are the 2 × 2 {L_AB only, Eq. 3} × {no scheduling, MILES scheduling} — `vanilla`,
`miles-lab`, `aux`, `miles` — so the report can say what the auxiliary losses do and what the
scheduling does, with and without the other (`factorial`).
"""
from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from .config import TrainConfig
from .datasets import load_dataset
from .errors import UserError
from .methods import BASELINES, MAIN_METHODS, METHODS, METHODS_2025, RECENT_METHODS, report_name
from .methods.base import is_unimodal, unimodal_modality, unimodal_name
from .metrics import METRIC_LABELS, task_of
from . import provenance
from .pool import run_many
from .handed import no_links_below
from .runs import history_metric, read_history, read_summary, save_figure, write_json, write_text
from .seed_stats import mean_std, paired_difference, points
from .train import run_or_reuse

ALL_METHODS = MAIN_METHODS + BASELINES + RECENT_METHODS + METHODS_2025
REPORT = "report.json"  # what `milesbook verify` re-runs a report from and checks it against


def run_dir(out: Path, method: str, fusion: str, seed: int) -> Path:
    name = method if is_unimodal(method) else f"{method}-{fusion}"
    return Path(out) / name / f"seed{seed}"


def load_summaries(out, method: str, fusion: str, seeds: int) -> list[dict]:
    """The summary.json of each seed of one method in a comparison folder."""
    return [read_summary(run_dir(out, method, fusion, seed)) for seed in range(seeds)]


def summarize(summaries: dict[str, list[dict]], modalities, prefix: str = "", metric: str | None = None) -> list[dict]:
    """One row per method: mean and std over seeds of the test fusion metric (`fusion_*`), each
    modality's (`<m>_*`) and Δ = |M_A − M_B| (`delta_*`). `prefix` picks which epoch's test metrics:
    "" (selected), "strict_" or "last_". `metric` defaults to the runs' headline (accuracy, or
    micro-F1 on multi-label data); "f1macro" reads the other F1. Unimodal rows fill only their modality.
    Methods that read modalities from the fusion head's parts and train detached probes (`vanilla`,
    `miles-lab`) also get each encoder's probe reading (`probe_<m>_*`; None for the others)."""
    rows = []
    for method, runs in summaries.items():
        name = metric or history_metric(runs[0])
        row = {"method": method, "seeds": len(runs), "metric": name}
        only = unimodal_modality(method)
        row["fusion_mean"], row["fusion_std"] = (None, None) if only else \
            mean_std([r[f"{prefix}test_{name}_fusion"] for r in runs])
        for m in modalities:
            if only and m != only:
                row[f"{m}_mean"], row[f"{m}_std"] = None, None
            else:
                row[f"{m}_mean"], row[f"{m}_std"] = mean_std([r[f"{prefix}test_{name}_{m}"] for r in runs])
        probed = not only and all(r.get("heads") == "probes" and r.get("modality_reading") == "part" for r in runs)
        for m in modalities:
            row[f"probe_{m}_mean"], row[f"probe_{m}_std"] = \
                mean_std([r[f"{prefix}test_{name}_head_{m}"] for r in runs]) if probed else (None, None)
        if only or len(modalities) < 2:
            row["delta_mean"], row["delta_std"] = None, None
        else:  # Δ = max − min over the modalities (|M_A − M_B| for two)
            row["delta_mean"], row["delta_std"] = mean_std(
                [max(values) - min(values) for values in
                 ([r[f"{prefix}test_{name}_{m}"] for m in modalities] for r in runs)])
        rows.append(row)
    return rows


def _gap_text(modalities) -> str:
    """How Δ is computed, in words: |M_A − M_B| for two modalities, max − min over more."""
    if len(modalities) == 2:
        return f"|M_{modalities[0]} − M_{modalities[1]}|"
    return f"max − min of M_m over {', '.join(modalities)}"


def cell(row: dict, key: str) -> str:
    """A table cell in %: "mean ± std" over seeds, the mean alone with one seed (no spread to show),
    "–" where the row has no such value."""
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" if row.get("seeds", 2) < 2 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(rows: list[dict], modalities, probes=()) -> str:
    """The comparison table; `probes` adds a column of the encoder probe's reading for those modalities."""
    header = ["method", "multimodal", *modalities, "Δ", *[f"{m} probe" for m in probes]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [report_name(row["method"]), cell(row, "fusion"), *[cell(row, m) for m in modalities], cell(row, "delta"),
                 *[cell(row, f"probe_{m}") for m in probes]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def weak_modality(rows: list[dict], modalities) -> str | None:
    """The modality whose unimodal reference scores lower (None without both references)."""
    uni = {m: r[f"{m}_mean"] for r in rows for m in modalities if r["method"] == unimodal_name(m)}
    return min(uni, key=uni.get) if len(uni) == len(modalities) else None


def decomposition(rows: list[dict], modalities) -> str:
    """Sentences splitting the weak modality's gain into the auxiliary losses' and the scheduler's."""
    weak = weak_modality(rows, modalities)
    by = {r["method"]: r for r in rows}
    if weak is None or not all(k in by for k in ("vanilla", "aux", "miles")):
        return ""
    uni, van = by[unimodal_name(weak)][f"{weak}_mean"], by["vanilla"][f"{weak}_mean"]
    aux, mil = by["aux"][f"{weak}_mean"], by["miles"][f"{weak}_mean"]
    gap = uni - van
    def percent(x: float) -> str:
        return f"{100 * x / gap:.0f} % of the gap" if gap > 0 else ""

    def share(x: float) -> str:
        return f" ({percent(x)})" if gap > 0 else ""

    opening = (f"Weak modality: **{weak}** (unimodal {100 * uni:.1f} %). Vanilla's {weak} reading is "
               f"{100 * van:.1f} %, {100 * gap:.1f} points below its unimodal model. The auxiliary losses "
               f"alone (`aux` − `vanilla`) move it by {100 * (aux - van):+.1f} points{share(aux - van)}")
    ending = f"MILES ends {100 * abs(uni - mil):.1f} points {'below' if mil <= uni else 'above'} the unimodal model."
    if "miles-lab" not in by:
        return (f"{opening}; the scheduling (`miles` − `aux`) by {100 * (mil - aux):+.1f} points"
                f"{share(mil - aux)}; {ending}")
    lab = by["miles-lab"][f"{weak}_mean"]
    probe_van, probe_lab = by["vanilla"].get(f"probe_{weak}_mean"), by["miles-lab"].get(f"probe_{weak}_mean")
    probe = "" if probe_van is None or probe_lab is None else \
        (f"; the {weak} encoder's probe by {100 * (probe_lab - probe_van):+.1f}, "
         f"{100 * probe_van:.1f} → {100 * probe_lab:.1f} %")
    return (f"{opening}. The scheduling moves it by {100 * (lab - van):+.1f} points without the auxiliary "
            f"losses (`miles-lab` − `vanilla`{probe}) and by {100 * (mil - aux):+.1f} points with them "
            f"(`miles` − `aux`{', ' + percent(mil - aux) if gap > 0 else ''}); {ending}")


def _verdict(diff: dict | None) -> str:
    if diff is None or diff["low"] is None:
        return "cannot be told from noise with one seed"
    if diff["low"] > 0 or diff["high"] < 0:
        return "distinguishable from zero"
    return "not distinguishable from zero"


FACTORIAL = ("vanilla", "miles-lab", "aux", "miles")


def factorial_effects(summaries: dict[str, list[dict]], rows: list[dict], modalities, metric: str) -> dict:
    """The paired-by-seed effects on the weak modality's test metric that the factorial reports, by
    name ("miles − aux", …; `paired_difference` each). Empty without the 2 × 2 and both references."""
    weak = weak_modality(rows, modalities)
    if weak is None or not all(k in summaries for k in FACTORIAL):
        return {}
    reading, probe = f"test_{metric}_{weak}", f"test_{metric}_head_{weak}"
    by = {r["method"]: r for r in rows}
    probed = all(by[m].get(f"probe_{weak}_mean") is not None for m in ("vanilla", "miles-lab"))
    return {"miles-lab − vanilla": paired_difference(summaries["miles-lab"], summaries["vanilla"], reading),
            "miles-lab − vanilla, probe": paired_difference(summaries["miles-lab"], summaries["vanilla"], probe)
            if probed else None,
            "miles − aux": paired_difference(summaries["miles"], summaries["aux"], reading),
            "aux − vanilla": paired_difference(summaries["aux"], summaries["vanilla"], reading),
            "miles − miles-lab": paired_difference(summaries["miles"], summaries["miles-lab"], reading)}


def report_record(summaries: dict[str, list[dict]], rows: list[dict], modalities, metric: str) -> dict:
    """What `milesbook verify` checks a report against: each method's per-seed values of every cell
    of its row (`summarize`'s columns: fusion, each modality, Δ, probes) and each factorial effect
    with the verdict the report draws from it."""
    methods = {}
    for method, runs in summaries.items():
        singles = [summarize({method: [r]}, modalities, metric=metric)[0] for r in runs]
        columns = [k.removesuffix("_mean") for k, v in singles[0].items() if k.endswith("_mean") and v is not None]
        methods[method] = {"seeds": [r["seed"] for r in runs],
                           "values": {c: [one[f"{c}_mean"] for one in singles] for c in columns}}
    effects = factorial_effects(summaries, rows, modalities, metric)
    return {"weak": weak_modality(rows, modalities), "metric": metric, "methods": methods,
            "effects": {name: {"difference": d, "verdict": _verdict(d)} for name, d in effects.items()
                        if d is not None}}


def factorial(summaries: dict[str, list[dict]], rows: list[dict], modalities, metric: str) -> str:
    """The 2 × 2 {L_AB only, Eq. 3} × {no scheduling, MILES scheduling} on the weak modality, as a
    Markdown table with each effect paired by seed, and a sentence per scheduling effect saying whether
    its 95 % interval excludes zero. Empty unless `vanilla`, `miles-lab`, `aux`, `miles` and both
    unimodal references are in `summaries`."""
    effects = factorial_effects(summaries, rows, modalities, metric)
    if not effects:
        return ""
    weak = weak_modality(rows, modalities)
    by = {r["method"]: r for r in rows}
    label = METRIC_LABELS[metric]
    lab_effect, probe_effect = effects["miles-lab − vanilla"], effects["miles-lab − vanilla, probe"]
    aux_effect = effects["miles − aux"]
    lines = [f"| {weak}, test {label} (%) | no scheduling | MILES scheduling | scheduling effect (paired by seed) |",
             "|---|---|---|---|",
             f"| L_AB only, read from the fusion head's {weak} part | vanilla {cell(by['vanilla'], weak)} | "
             f"miles-lab {cell(by['miles-lab'], weak)} | {points(lab_effect)} |"]
    has_probe = probe_effect is not None
    if has_probe:
        lines.append(f"| L_AB only, {weak} encoder read by a detached probe | vanilla "
                     f"{cell(by['vanilla'], f'probe_{weak}')} | miles-lab {cell(by['miles-lab'], f'probe_{weak}')} | "
                     f"{points(probe_effect)} |")
    lines += [f"| Eq. 3 (L_AB + Σ L_m), read from the trained {weak} head | aux {cell(by['aux'], weak)} | "
              f"miles {cell(by['miles'], weak)} | {points(aux_effect)} |",
              f"| auxiliary-loss effect (Eq. 3 − L_AB, fusion-part reading, paired) | "
              f"{points(effects['aux − vanilla'])} | {points(effects['miles − miles-lab'])} | |"]
    n = min(len(summaries[k]) for k in FACTORIAL)
    text = [f"Scheduling effect on the {weak} side over {n} paired seed(s): without the auxiliary losses "
            f"{points(lab_effect)} points read from the fusion part — {_verdict(lab_effect)}"]
    if has_probe:
        text[0] += f" — and {points(probe_effect)} on its encoder's probe — {_verdict(probe_effect)}"
    text[0] += (f"; with them (`miles` − `aux`) {points(aux_effect)} — {_verdict(aux_effect)}. The fusion part "
                f"understates what an L_AB-trained encoder has learnt; the probe reads the encoder itself.")
    return "\n".join(lines) + "\n\n" + text[0]


def fused_effects(summaries: dict[str, list[dict]], metric: str) -> dict:
    """The 2 × 2's effects on the fused test metric, paired by seed (`paired_difference` each), by name:
    "miles-lab − vanilla", "miles − aux" (the scheduling without and with the auxiliary losses), "aux −
    vanilla", "miles − miles-lab" (the losses without and with it), "miles − vanilla" (MILES whole).
    Empty unless `vanilla`, `miles-lab`, `aux` and `miles` are all in `summaries`."""
    if not all(k in summaries for k in FACTORIAL):
        return {}
    key = f"test_{metric}_fusion"
    return {f"{t} − {c}": paired_difference(summaries[t], summaries[c], key)
            for t, c in (("miles-lab", "vanilla"), ("miles", "aux"), ("aux", "vanilla"), ("miles", "miles-lab"),
                         ("miles", "vanilla"))}


def fused_factorial(summaries: dict[str, list[dict]], rows: list[dict], metric: str) -> str:
    """The 2 × 2 on the fused prediction as a Markdown table: each cell's fused test metric and the
    effects of `fused_effects` with their 95 % intervals, then a sentence on what the intervals allow.
    Empty without the 2 × 2."""
    effect = fused_effects(summaries, metric)
    if not effect:
        return ""
    label = METRIC_LABELS[metric]
    by = {r["method"]: r for r in rows}
    lines = [f"| fused, test {label} (%) | no scheduling | MILES scheduling | scheduling effect (paired by seed) |",
             "|---|---|---|---|",
             f"| L_AB only | vanilla {cell(by['vanilla'], 'fusion')} | miles-lab {cell(by['miles-lab'], 'fusion')} | "
             f"{points(effect['miles-lab − vanilla'])} |",
             f"| Eq. 3 (L_AB + Σ L_m) | aux {cell(by['aux'], 'fusion')} | miles {cell(by['miles'], 'fusion')} | "
             f"{points(effect['miles − aux'])} |",
             f"| auxiliary-loss effect (Eq. 3 − L_AB, paired) | {points(effect['aux − vanilla'])} | "
             f"{points(effect['miles − miles-lab'])} | |"]
    whole, scheduling, losses = effect["miles − vanilla"], effect["miles − aux"], effect["aux − vanilla"]
    alone = effect["miles-lab − vanilla"]
    text = (f"On the fused {label}, MILES as the paper runs it (`miles` − `vanilla`) moves it by {points(whole)} "
            f"points — {_verdict(whole)}; of that, its scheduling on top of the auxiliary losses (`miles` − `aux`) "
            f"{points(scheduling)} — {_verdict(scheduling)} — and the auxiliary losses (`aux` − `vanilla`) "
            f"{points(losses)} — {_verdict(losses)}. The scheduling without them (`miles-lab` − `vanilla`): "
            f"{points(alone)} — {_verdict(alone)}.")
    return "\n".join(lines) + "\n\n" + text


def gblend_floor_note(summaries: list[dict], floor: float) -> str:
    """How often our floor on G-Blend's fusion weight bound, over these runs' weight estimations: when it
    binds, the row measures the guard as much as G-Blend's own weights."""
    counted = [s for s in summaries if "gblend_estimations" in s]
    if not counted:
        return "How often G-Blend's fusion-weight floor bound was not recorded (runs made before it was counted)."
    bound, estimations = sum(s["gblend_floor_bound"] for s in counted), sum(s["gblend_estimations"] for s in counted)
    return (f"G-Blend's fusion-weight floor ({floor:g}, our guard, not the paper's) bound in {bound} of {estimations} "
            f"weight estimations over {len(counted)} run(s)" + (": there the fusion head's weight is ours, not "
                                                                 "G-Blend's." if bound else "."))


def expand_methods(methods, modalities=None) -> list[str]:
    """Method names, with "all" standing for the 2 × 2 (vanilla, miles-lab, aux, miles), the seven baselines
    and the recent methods (`RECENT_METHODS`, `METHODS_2025`) — without those defined for fewer modalities than
    `modalities` has (e.g. PMR's pair of scores at three; named explicitly, they refuse with a message)."""
    count = len(modalities) if modalities is not None else 2
    everything = [n for n in ALL_METHODS if METHODS[n].max_modalities is None or count <= METHODS[n].max_modalities]
    names = []
    for m in methods:
        for name in (everything if m == "all" else [m]):
            if name not in names:
                names.append(name)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; choose from: all, {', '.join(METHODS)}")
    return names


def unimodal_lr_search(base: TrainConfig, data, out: Path, progress: bool = True,
                       factors=(1 / 3, 1.0, 3.0), encoders: dict | None = None) -> dict:
    """Each modality's best unimodal learning rate (highest validation metric at its selected epoch,
    seed 0) over `factors` × the global rate — what MSLR-K/S start from. Runs are cached like any other."""
    grid = [base.lr * f for f in factors]
    best = {}
    for m in data.modalities:
        scores = {}
        for lr in grid:
            config = replace(base, method=unimodal_name(m), lr=lr, seed=0)
            folder = run_dir(out, unimodal_name(m), "concat", 0) if lr == base.lr else \
                Path(out) / "lr-search" / f"{unimodal_name(m)}-lr{lr:.3g}"
            no_links_below(out, folder)
            summary = run_or_reuse(config, folder, data, progress, encoders=encoders)
            scores[lr] = summary[f"best_val_{history_metric(summary)}_fusion"]
        best[m] = max(grid, key=lambda lr: (scores[lr], lr == base.lr))
    return {"grid": grid, "best": best}


def compare(dataset="digits-av", methods=MAIN_METHODS, fusions=("concat",), seeds: int = 3,
            out="runs/compare", base: TrainConfig | None = None, progress: bool = True, workers: int = 1,
            encoders: dict | None = None) -> dict:
    """Train (or reuse) every method × fusion × seed plus the unimodal references (`workers` processes
    at once, each run with its own `base.threads`: the numbers do not depend on `workers`), write the
    report (`results.md`, `results.csv`, `report.json`, figures) and return {fusion: {"rows",
    "strict_rows", "last_rows", "markdown", …}}. `dataset`: a name, the path of your own data, or a
    `MultimodalDataset` (e.g. `from_arrays`); `encoders` {modality: nn.Module}: your own encoders."""
    out = Path(out)
    data, dataset, base = _data_and_base(dataset, base)
    modalities = data.modalities
    task = task_of(data.task)
    methods = expand_methods(methods, modalities)
    references = [unimodal_name(m) for m in modalities]
    base_mslr, search_note = _mslr_base(base, methods, data, out, progress, encoders)
    jobs = _jobs(out, base, base_mslr, methods, references, fusions, seeds)
    for _, folder in jobs.values():  # a handed report's seed<k> that links elsewhere: refused before any run
        no_links_below(out, folder)
    done = dict(zip(jobs, run_many(list(jobs.values()), workers, data, progress, encoders)))
    everything = list(done.values())
    made_under = provenance.summarize_many([s.get("provenance") for s in everything])
    md = [*_header(dataset, data, base, seeds, task.headline), *([search_note, ""] if search_note else []),
          made_under, ""]
    record = {"kind": "compare", "dataset": dataset, "methods": methods, "fusions": list(fusions), "seeds": seeds,
              "base": base.to_dict(), "test_size": len(data.splits["test"]), "made_under": made_under,
              "provenance": provenance.common([s.get("provenance") for s in everything]),
              "fusion_results": {}}
    report, csv_rows = {}, []
    for fusion in fusions:
        summaries = {method: [done[method, fusion if method in methods else "concat", seed] for seed in range(seeds)]
                     for method in [*references, *methods]}
        report[fusion], lines, rows = _fusion_report(out, fusion, summaries, data, task, base, methods, seeds,
                                                     made_under)
        report[fusion]["mslr_note"] = search_note
        record["fusion_results"][fusion] = report_record(summaries, report[fusion]["rows"], modalities, task.headline)
        md += lines
        csv_rows += rows
    write_report(out, md, csv_rows, record)
    return report


def _data_and_base(dataset, base: TrainConfig | None):
    """(the data, its name as the report gives it, `base` with that name): a registered name is loaded;
    a folder's data keeps its path (worker processes load it by that), data in memory its name."""
    if isinstance(dataset, str):
        data = load_dataset(dataset, **(base or TrainConfig()).dataset_options)
    else:
        data = dataset
        dataset = data.origin.removeprefix("folder ") if data.origin.startswith("folder ") else data.name
    return data, dataset, replace(base or TrainConfig(), dataset=dataset)


def _mslr_base(base: TrainConfig, methods, data, out: Path, progress: bool, encoders) -> tuple[TrainConfig, str]:
    """The configuration MSLR's rows train from and the report's sentence on where its rates come from:
    without rates of your own, each modality's best unimodal rate (`unimodal_lr_search`)."""
    if not any(m.startswith("mslr-") for m in methods) or base.mslr_lrs:
        return base, ""
    rates = unimodal_lr_search(base, data, out, progress, encoders=encoders)
    note = (f"MSLR rates: each modality's best unimodal rate on validation over "
            f"{sorted(rates['grid'])} (seed 0): {rates['best']}.")
    if len(set(rates["best"].values())) == 1 and "mslr-s" in methods:
        note += (" The modalities' rates are equal, so MSLR-S's smoothing (a pull of the rates towards each other) "
                 "changes nothing: its rows are MSLR-K's runs again.")
    return replace(base, mslr_lrs=rates["best"]), note


def _jobs(out: Path, base: TrainConfig, base_mslr: TrainConfig, methods, references, fusions, seeds: int) -> dict:
    """(method, fusion, seed) -> (config, folder) of every run; the unimodal references once for every fusion."""
    jobs = {}
    for fusion in fusions:
        # The cheaper one-encoder references last: worker processes then end close together.
        for method in [*methods, *references]:
            for seed in range(seeds):
                config = replace(base_mslr if method.startswith("mslr-") else base, method=method,
                                 fusion=fusion if method in methods else "concat", seed=seed)
                jobs.setdefault((method, fusion if method in methods else "concat", seed),
                                (config, run_dir(out, method, fusion, seed)))
    return jobs


def _header(dataset: str, data, base: TrainConfig, seeds: int, metric: str) -> list[str]:
    """The report's title and the paragraph saying what its numbers are and how they were made."""
    return [f"# Results on {dataset}", "",
            f"Test {METRIC_LABELS[metric]} (%), {'mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}, "
            "at the epoch chosen on validation "
            f"({base.selection_tolerance} tolerance rule, see `milesbook.runs`). {base.epochs} epochs, "
            f"{base.optimizer} lr {base.lr}, batch {base.batch_size}, encoder {base.encoder}; MILES τ = {base.tau}, "
            f"μ = {base.mu}, utilization from the {base.utilization_split} split. Δ = "
            f"{_gap_text(data.modalities)}. Dataset: {data.description}.", ""]


def _fusion_report(out: Path, fusion: str, summaries: dict[str, list[dict]], data, task, base: TrainConfig, methods,
                   seeds: int, made_under: str) -> tuple[dict, list[str], list[dict]]:
    """One fusion's part of the report: what `compare` returns for it, its Markdown section and its
    results.csv rows (every method at each choice of epoch); draws its figures."""
    modalities = data.modalities
    tables = {p: summarize(summaries, modalities, p) for p in ("", "strict_", "last_")}
    weak = weak_modality(tables[""], modalities)
    probes = [weak] if weak and any(r.get(f"probe_{weak}_mean") is not None for r in tables[""]) else []
    text = markdown_table(tables[""], modalities, probes)
    result = {"rows": tables[""], "strict_rows": tables["strict_"], "last_rows": tables["last_"],
              "markdown": text, "decomposition": decomposition(tables[""], modalities),
              "factorial": factorial(summaries, tables[""], modalities, task.headline),
              "fused_factorial": fused_factorial(summaries, tables[""], task.headline),
              "summaries": summaries, "made_under": made_under}
    md = [f"## {fusion} fusion", "", text, "", result["decomposition"], ""]
    for part in (result["factorial"], result["fused_factorial"]):
        if part:
            md += [part, ""]
    for other in task.metrics[1:]:  # multi-label: macro-F1 beside the headline micro-F1
        result[f"{other}_rows"] = summarize(summaries, modalities, "", other)
        md += [f"The same runs in {METRIC_LABELS[other]} (%):", "",
               markdown_table(result[f"{other}_rows"], modalities), ""]
    if "gblend" in methods:
        result["gblend_extra_epochs"] = [read_history(run_dir(out, "gblend", fusion, s))[-1]["gblend_extra_epochs"]
                                         for s in range(seeds)]
        md += [_gblend_extra_text(result["gblend_extra_epochs"], summaries["gblend"], base), ""]
    if weak:
        md += _epoch_choices(tables, weak, summaries, task.headline, seeds)
    csv_rows = [{"fusion": fusion, "epoch_choice": prefix.rstrip("_") or "selected", **row}
                for prefix, rows in tables.items() for row in rows]
    _draw(out, fusion, summaries, modalities, base)
    md += [f"![results](results-{fusion}.png)", f"![dynamics](dynamics-{fusion}.png)", ""]
    return result, md, csv_rows


def _gblend_extra_text(extra: list[float], summaries: list[dict], base: TrainConfig) -> str:
    """What G-Blend's weight estimation cost on top of the counted epochs, and how often our floor bound."""
    return (f"G-Blend's weight estimation trained {int(max(extra))} extra epochs per run on top of "
            f"the {base.epochs} counted above (mode {base.gblend_mode}, super-epoch {base.gblend_every} "
            f"epochs per head). {gblend_floor_note(summaries, base.gblend_min_fusion)}")


def _epoch_choices(tables: dict[str, list[dict]], weak: str, summaries: dict[str, list[dict]], metric: str,
                   seeds: int) -> list[str]:
    """The weak modality at the selected, strict and last epoch, and vanilla's encoder read by its probe."""
    md = [f"The weak modality ({weak}) at three choices of epoch:", "",
          f"| method | selected (tolerance rule) | strict (highest val {METRIC_LABELS[metric]}) | last epoch |",
          "|---|---|---|---|"]
    for sel, strict, last in zip(tables[""], tables["strict_"], tables["last_"]):
        if sel.get(f"{weak}_mean") is not None:
            md.append(f"| {sel['method']} | {cell(sel, weak)} | {cell(strict, weak)} | {cell(last, weak)} |")
    if "vanilla" in summaries:
        probe = mean_std([r[f"test_{metric}_head_{weak}"] for r in summaries["vanilla"]])
        md += ["", f"Vanilla's {weak} encoder read by a detached linear probe (trained on its features, "
                   f"never moving it): {cell({'probe_mean': probe[0], 'probe_std': probe[1], 'seeds': seeds}, 'probe')} % — the encoder "
                   "itself is starved, not only the fusion head's use of it."]
    md.append("")
    return md


# -- a report's files ------------------------------------------------------------------------------

def write_report(out: Path, markdown: list[str], csv_rows: list[dict], record: dict,
                 extra: dict[str, dict] | None = None) -> None:
    """The files of a report (`compare`'s and the tuned comparison's) in `out`, each written whole:
    `results.md` (the lines of `markdown`), `results.csv` (`csv_rows`), the `extra` JSON files by name,
    and `report.json` (`record`, what `milesbook verify` reads) last."""
    out = Path(out)
    write_text(out / "results.md", "\n".join(markdown))
    write_text(out / "results.csv", _csv_text(csv_rows))
    for name, value in (extra or {}).items():
        write_json(out / name, value)
    write_json(out / REPORT, record)


def _csv_text(rows: list[dict]) -> str:
    """A report's table as CSV text, columns in the first row's order, CRLF line ends (csv's dialect)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


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
        for folder in folders:
            no_links_below(Path(out), folder)
        summaries = [run_or_reuse(replace(config, seed=seed), folder, data, progress)
                     for seed, folder in enumerate(folders)]
        row = summarize({config.method: summaries}, data.modalities)[0]
        rows.append({**overrides, **{k: v for k, v in row.items() if k != "method"}, "runs": folders})
    return rows


def _draw(out: Path, fusion: str, summaries, modalities, base: TrainConfig) -> None:
    import matplotlib.pyplot as plt

    from .plots import PAGE_WIDTH_IN, book_style, one_legend_per_row, plot_learning_dynamics, plot_results
    ax = plot_results(summaries, modalities, title=f"{base.dataset}, {fusion} fusion")
    save_figure(ax.figure, out / f"results-{fusion}.png", dpi=110)
    plt.close(ax.figure)
    shown = [m for m in ("vanilla", "miles-lab", "miles") if (run_dir(out, m, fusion, 0) / "history.csv").exists()]
    if not shown:
        return
    with book_style():  # axes made here get the style the plotting functions use; one column per method
        fig, axes = plt.subplots(3, len(shown), figsize=(PAGE_WIDTH_IN, 9.5), squeeze=False, sharex=True,
                                 sharey="row")
        for method, column in zip(shown, axes.T):
            plot_learning_dynamics(read_history(run_dir(out, method, fusion, 0)), modalities,
                                   title=None, tau=base.tau if method.startswith("miles") else None, axes=column)
            column[0].set_title(f"{method}: utilization")
        one_legend_per_row(axes)
        fig.tight_layout()
    save_figure(fig, out / f"dynamics-{fusion}.png", dpi=110)
    plt.close(fig)

