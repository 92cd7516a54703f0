"""The tuned comparison (`milesbook compare --from-search DIR`): every method at the setting its own
search chose, retrained over fresh seeds — the paper's Tables I–III with variance.

The MILES paper reports, per method, the single best of 80 random draws chosen on validation. That
number carries the luck of the draw (the best of many noisy runs is biased upwards), so beside it we
retrain the chosen configuration over K seeds the search never used and report the test mean ± std
and a 95 % t-interval of the mean. The paper-style number is computed too — the chosen trial
retrained with the search's own seed, now reading test (training is deterministic, so it is the
trial's model; its validation value is checked against the search's) — so a reader sees how much
best-of-N selection inflates one run.

Layout: DIR holds one search per (method, fusion), each a folder with a `best.json` (`milesbook
search`). The report goes to `out` (default DIR/compare): `<method>-<fusion>/seed<k>/` run folders,
`<method>-<fusion>/search-seed<s>/` (the paper-style retrain), `results.md`, `results.csv`.
Unimodal references come from `unimodal-<m>` searches in DIR when there are any, else from the
default configuration (the report says which).
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from . import provenance, runs
from .comparison import (ALL_METHODS, cell, decomposition, factorial, gblend_floor_note, markdown_table, report_record,
                         summarize, weak_modality, write_report)
from .methods import report_name
from .methods.base import is_unimodal, unimodal_modality, unimodal_name
from .config import TrainConfig
from .errors import UserError
from .metrics import METRIC_LABELS, task_of
from .handed import no_links_below, read_best, refuse_imports
from .pool import run_many
from .seed_stats import mean_interval, mean_std, paired_at_resolution, points, t_interval


def find_searches(folder) -> list[dict]:
    """The `best.json` of every finished search in `folder` (itself or its sub-folders), each with
    `folder` added, ordered like the comparison tables (unimodal references first)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--from-search {folder}: no such folder; give the --out of `milesbook search`")
    paths = [folder / "best.json"] if (folder / "best.json").exists() else sorted(folder.glob("*/best.json"))
    if not paths:
        raise UserError(f"--from-search {folder} holds no finished search (no best.json in it or its "
                        "sub-folders); run `milesbook search --out DIR/<method>-<fusion>` first")
    records = []
    for path in paths:
        record = read_best(path)
        records.append({**record, "folder": str(path.parent)})
    settings = {json.dumps([r["config"]["dataset"], r["config"]["dataset_options"]], sort_keys=True) for r in records}
    if len(settings) > 1:
        raise UserError(f"--from-search {folder} mixes datasets or dataset options ({', '.join(sorted(settings))}); "
                        "give one dataset's searches")
    seen = {}
    for r in records:
        key = (r["config"]["method"], "" if is_unimodal(r["config"]["method"]) else r["config"]["fusion"])
        if key in seen:
            raise UserError(f"--from-search {folder} holds two searches of {'/'.join(filter(None, key))} "
                            f"({seen[key]} and {r['folder']}); keep one")
        seen[key] = r["folder"]
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    return sorted(records, key=lambda r: (not is_unimodal(r["config"]["method"]),
                                          order.get(r["config"]["method"], len(order)), r["config"]["method"],
                                          r["config"]["fusion"]))


def fresh_seeds(records: list[dict], k: int) -> list[int]:
    """The first `k` seeds no search in `records` trained with (a search trains every trial with its seed)."""
    used = {r["config"]["seed"] for r in records}
    seeds, s = [], 0
    while len(seeds) < k:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


# -- the report ----------------------------------------------------------------------------------

def _check_mslr_rates(record: dict, searched: dict, modalities, search_dir) -> None:
    """An MSLR search trains each encoder at its unimodal search's chosen rate (`milesbook.search`):
    its row needs those searches beside it, and the rates it was searched with must be theirs."""
    name = f"{record['config']['method']}-{record['config']['fusion']}"
    missing = [unimodal_name(m) for m in modalities if unimodal_name(m) not in searched]
    if missing:
        raise UserError(f"--from-search {search_dir}: {name} takes its encoder rates from the unimodal searches, "
                        f"and {', '.join(missing)} is not there; search it (--method unimodal --out {search_dir})")
    chosen = {m: searched[unimodal_name(m)]["params"]["lr"] for m in modalities}
    if record["config"]["mslr_lrs"] != chosen:
        raise UserError(f"--from-search {search_dir}: {name} was searched with encoder rates "
                        f"{record['config']['mslr_lrs']}, not the ones the unimodal searches chose ({chosen}); "
                        f"move {record['folder']} aside and search it again")


def _setting(params: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())


def compare_tuned(search_dir, seeds: int = 5, out=None, workers: int = 1, progress: bool = True,
                  device: str | None = None, only=None, encoder: str | None = None) -> dict:
    """Retrain each search's chosen configuration in `search_dir` over `seeds` fresh seeds (and once
    with the search's seed, reading test: the paper-style number), write `results.md` and
    `results.csv` in `out` (default `search_dir/compare`) and return {fusion: report}. `device`
    overrides where the runs train (a run made on another device kind is not reused); `only` (method
    names) keeps those searches' rows and the unimodal references (what `verify --methods` re-runs).
    `encoder`: the `--encoder` you pass yourself when the searches used encoder code of yours (nothing a
    search folder names is imported otherwise)."""
    from .datasets import load_dataset
    records, retrain = _searches_and_seeds(search_dir, seeds, only, encoder)
    out = Path(out) if out is not None else Path(search_dir) / "compare"
    data = load_dataset(records[0]["config"]["dataset"], **records[0]["config"]["dataset_options"])
    modalities = data.modalities
    metric = task_of(data.task).headline
    searched = {r["config"]["method"]: r for r in records if is_unimodal(r["config"]["method"])}
    multimodal = [r for r in records if not is_unimodal(r["config"]["method"])]
    if not multimodal:
        raise UserError(f"--from-search {search_dir} holds only unimodal searches; search a multimodal method too")
    for r in multimodal:
        if r["config"]["method"].startswith("mslr-"):
            _check_mslr_rates(r, searched, modalities, search_dir)
    references = _reference_configs(modalities, searched, multimodal, device)
    jobs, where = _jobs(references, multimodal, retrain, out, device)
    for _, folder in jobs:  # a handed search's compare/ whose seed<k> links elsewhere: refused before any run
        no_links_below(out, folder)
    summaries = run_many(jobs, workers, data if workers <= 1 else None, progress)
    for (_, folder), summary in zip(jobs, summaries):  # the paper's reading beside ours (`runs.best_on_test`)
        summary.update(runs.best_on_test(folder, metric))

    made_under = provenance.summarize_many([s.get("provenance") for s in summaries])
    record = {"kind": "tuned", "search_dir": os.path.relpath(Path(search_dir).resolve(), out.resolve()),
              "seeds": seeds, "test_size": len(data.splits["test"]), "made_under": made_under,
              "provenance": provenance.common([s.get("provenance") for s in summaries]), "fusion_results": {}}
    md = _header(records, multimodal, searched, references, retrain, metric, made_under)
    report, csv_rows = {}, []
    for fusion in dict.fromkeys(r["config"]["fusion"] for r in multimodal):
        by_method, paper = _runs_of(fusion, references, where, summaries)
        record_of = {r["config"]["method"]: r for r in records if is_unimodal(r["config"]["method"])
                     or r["config"]["fusion"] == fusion}
        report[fusion], lines, rows = _fusion_report(fusion, by_method, paper, record_of, modalities, metric, seeds,
                                                     1 / max(len(data.splits["test"]), 1))
        record["fusion_results"][fusion] = report_record(by_method, report[fusion]["rows"], modalities, metric)
        for method, entry in record["fusion_results"][fusion]["methods"].items():
            entry["values"].update(_oracle_values(by_method[method], modalities, metric))
            if method in paper:  # the chosen trial itself, every reading (chapter 6's best-of-N figure)
                entry["best_trial"] = {r: paper[method][f"test_{metric}_{r}"] for r in ("fusion", *modalities)}
        md += lines
        csv_rows += rows
    write_report(out, md, csv_rows, record,
                 extra={"seeds.json": {"retrained": retrain, "searches": [r["folder"] for r in records]}})
    return report


def _searches_and_seeds(search_dir, seeds: int, only, encoder: str | None) -> tuple[list[dict], list[int]]:
    """The search records to retrain (`only`'s and the unimodal ones, or all) and the `seeds` fresh seeds,
    after refusing any search whose encoder code you did not name yourself (`--encoder`)."""
    if seeds < 1:
        raise UserError(f"--seeds must be ≥ 1, got {seeds}")
    records = find_searches(search_dir)
    for r in records:
        refuse_imports(r["config"]["encoder"], str(Path(r["folder"]) / "best.json"), encoder)
    retrain = fresh_seeds(records, seeds)  # from every search, so that `only` re-runs the same seeds
    if only:
        records = [r for r in records if is_unimodal(r["config"]["method"]) or r["config"]["method"] in only]
    return records, retrain


def _reference_configs(modalities, searched: dict, multimodal: list[dict], device: str | None) -> dict:
    """{"unimodal-<m>": config} of each unimodal reference, test read: its search's chosen setting, or
    without a unimodal search the searches' fixed settings (epochs, batch, encoder, …) at the default rate."""
    where_to = {} if device is None else {"device": device}
    references = {}
    for m in modalities:
        name = unimodal_name(m)
        config = TrainConfig.from_dict(searched[name]["config"]) if name in searched else \
            replace(TrainConfig.from_dict(multimodal[0]["config"]), method=name, lr=TrainConfig().lr)
        references[name] = replace(config, test_split=True, **where_to)
    return references


def _jobs(references: dict, multimodal: list[dict], retrain: list[int], out: Path,
          device: str | None) -> tuple[list, list]:
    """The runs to make, (config, folder) each, and where each belongs, (method, fusion, kind): kind
    "seed" for a fresh seed, "paper" for the chosen trial retrained with its search's seed."""
    where_to = {} if device is None else {"device": device}
    jobs, where = [], []
    for name, config in references.items():
        for s in retrain:
            jobs.append((replace(config, seed=s), out / name / f"seed{s}"))
            where.append((name, None, "seed"))
    for r in multimodal:
        config = replace(TrainConfig.from_dict(r["config"]), test_split=True, **where_to)
        tag = f"{config.method}-{config.fusion}"
        for s in retrain:
            jobs.append((replace(config, seed=s), out / tag / f"seed{s}"))
            where.append((config.method, config.fusion, "seed"))
        jobs.append((config, out / tag / f"search-seed{config.seed}"))
        where.append((config.method, config.fusion, "paper"))
    return jobs, where


def _runs_of(fusion: str, references: dict, where: list, summaries: list[dict]) -> tuple[dict, dict]:
    """One fusion's runs: ({method: summaries over the fresh seeds}, references first; {method: the
    paper-style run's summary})."""
    by_method, paper = {name: [] for name in references}, {}
    for (method, f, kind), summary in zip(where, summaries):
        if f is not None and f != fusion:
            continue
        if kind == "paper":
            paper[method] = summary
        else:
            by_method.setdefault(method, []).append(summary)
    return by_method, paper


def _header(records: list[dict], multimodal: list[dict], searched: dict, references: dict, retrain: list[int],
            metric: str, made_under: str) -> list[str]:
    """The report's title and the paragraphs saying how the searches chose, what was retrained, where the
    unimodal references come from, and what a difference between two rows means."""
    pruners = sorted({r["pruner"] for r in multimodal})
    samplers = sorted({r["sampler"] for r in multimodal})
    trials = sorted({r["trials_complete"] for r in records})
    return [f"# Tuned comparison on {records[0]['config']['dataset']}", "",
            f"Each method at the setting its own search chose on validation (sampler {', '.join(samplers)}, "
            f"pruner {', '.join(pruners)}, {'/'.join(map(str, trials))} complete trials per search; "
            f"`milesbook search --status` lists each space), retrained over {len(retrain)} seed(s) the searches never "
            f"used ({', '.join(map(str, retrain))}). Test {METRIC_LABELS[metric]} (%) at the epoch chosen on validation: "
            f"mean ± std and the 95 % t-interval of the mean. *Best trial* is the paper's protocol — the one "
            f"chosen run itself (retrained with the search's seed, now reading test) — for comparison.", "",
            "Unimodal references: " + ", ".join(
                f"{n} {'at its searched setting (' + _setting(searched[n]['params']) + ')' if n in searched else f'at the default rate {TrainConfig().lr} (no unimodal search in the folder)'}"
                for n in references) + ".", "",
            "Each method runs at its own chosen setting, so a difference between two rows (e.g. `miles` − `aux`) "
            "is between the two methods *as tuned* — their learning rates differ too — paired by seed.", "",
            made_under, ""]


def _fusion_report(fusion: str, by_method: dict, paper: dict, record_of: dict, modalities, metric: str,
                   seeds: int, resolution: float = 0.0) -> tuple[dict, list[str], list[dict]]:
    """One fusion's part of the report: what `compare_tuned` returns for it, its Markdown section and
    its results.csv rows. `record_of`: the search record (best.json) of each method; `resolution`: one
    test sample (1/N), the narrowest interval on a difference of test scores."""
    rows = summarize(by_method, modalities)
    weak = weak_modality(rows, modalities)
    probes = [weak] if weak and any(r.get(f"probe_{weak}_mean") is not None for r in rows) else []
    lines = [f"| method | setting chosen (trials) | best trial: val → test | test {METRIC_LABELS[metric]}, {seeds} seeds | "
             f"95 % CI | " + " | ".join(modalities) + " | Δ |", "|---|---|---|---|---|" + "---|" * (len(modalities) + 1)]
    csv_rows, clipped = [], False
    for row in rows:
        line, csv_row, row_clipped = _table_row(fusion, row, by_method[row["method"]], record_of.get(row["method"]),
                                                paper.get(row["method"]), modalities, metric)
        lines.append(line)
        csv_rows.append(csv_row)
        clipped |= row_clipped
    note = _reproduction_note(paper, record_of, metric)
    if clipped:
        note += " Intervals are shown clipped to the metric's range [0, 100]; with few seeds the t-interval is wide."
    result = {"rows": rows, "summaries": by_method, "paper": paper,
              "markdown": "\n".join(lines), "decomposition": decomposition(rows, modalities),
              "factorial": factorial(by_method, rows, modalities, metric)}
    if by_method.get("gblend"):
        floor = TrainConfig.from_dict(record_of["gblend"]["config"]).gblend_min_fusion
        note += " " + gblend_floor_note(by_method["gblend"], floor)
    md = [f"## {fusion} fusion", "", result["markdown"], "", note, ""]
    if result["decomposition"]:
        md += ["At each method's tuned setting: " + result["decomposition"], ""]
    if result["factorial"]:
        md += [result["factorial"], ""]
    if probes:
        md += [f"The {weak} encoders of the L_AB-only methods read by detached probes:", "",
               markdown_table([r for r in rows if r.get(f"probe_{weak}_mean") is not None], modalities, probes), ""]
    inflation, table = selection_inflation(by_method, weak, metric, resolution)
    result["inflation"] = inflation
    if table:
        md += [table, ""]
    return result, md, csv_rows


def _oracle_values(runs_of_method: list[dict], modalities, metric: str) -> dict:
    """A method's per-seed values at the epoch chosen on test (`runs.best_on_test`): "oracle_fusion"
    and "oracle_<m>" (a unimodal reference: its modality's), for report.json; empty without them."""
    if not runs_of_method or f"oracle_test_{metric}_fusion" not in runs_of_method[0]:
        return {}
    only = unimodal_modality(runs_of_method[0]["method"])
    columns = {} if only else {"oracle_fusion": "fusion"}
    columns.update({f"oracle_{m}": m for m in modalities if not only or m == only})
    return {name: [r[f"oracle_test_{metric}_{column}"] for r in runs_of_method] for name, column in columns.items()}


def selection_inflation(by_method: dict, weak: str | None, metric: str, resolution: float = 0.0) -> tuple[dict, str]:
    """How much the paper's reading — the best test value over epochs — exceeds ours, the test value
    at the epoch chosen on validation, run by run: {method: {"fusion": d, weak: d}} with d the mean
    difference over seeds and its 95 % t-interval, at least ±`resolution` (one test sample) wide
    (`seed_stats.paired_at_resolution`); "all" the same over the methods' mean differences (each method
    one unit); and the Markdown table. The best epoch on test is the first of several that tie."""
    found = {}
    for method, method_runs in by_method.items():
        if is_unimodal(method) or not method_runs or f"oracle_test_{metric}_fusion" not in method_runs[0]:
            continue
        found[method] = {reading: paired_at_resolution(
            [{"seed": r["seed"], "v": r[f"oracle_test_{metric}_{reading}"]} for r in method_runs],
            [{"seed": r["seed"], "v": r[f"test_{metric}_{reading}"]} for r in method_runs], "v", resolution)
            for reading in ("fusion", *([weak] if weak else []))}
    if not found:
        return {}, ""
    found["all"] = {reading: mean_interval([d[reading]["mean"] for d in found.values()]) for reading in found[next(iter(found))]}
    label = METRIC_LABELS[metric]
    lines = [f"The paper's reading beside ours: test {label} (%) at the epoch chosen on validation (ours) and at "
             f"the epoch with the best test {label} (the first of those that tie; the MILES paper's reading, and the "
             f"official ARL, AUG and Remix scripts'), and how much that choice adds (paired by run, mean and 95 % CI"
             f"{'; the ' + weak + ' reading at that same epoch' if weak else ''}):", "",
             "| method | fused, ours | fused, best on test | inflation | " +
             (f"{weak}, ours | {weak}, at that epoch | inflation |" if weak else ""),
             "|---|---|---|---|" + ("---|---|---|" if weak else "")]
    for method, diffs in found.items():
        if method == "all":
            continue
        method_runs = by_method[method]
        cells = [report_name(method)]
        for reading in diffs:
            ours = mean_std([r[f"test_{metric}_{reading}"] for r in method_runs])[0]
            oracle = mean_std([r[f"oracle_test_{metric}_{reading}"] for r in method_runs])[0]
            cells += [f"{100 * ours:.1f}", f"{100 * oracle:.1f}", points(diffs[reading])]
        lines.append("| " + " | ".join(cells) + " |")
    overall = ["all methods (each method one unit)"]
    for reading in found["all"]:
        overall += ["", "", points(found["all"][reading])]
    lines.append("| " + " | ".join(overall) + " |")
    return found, "\n".join(lines)


def _table_row(fusion: str, row: dict, runs: list[dict], record: dict | None, best: dict | None, modalities,
               metric: str) -> tuple[str, dict, bool]:
    """One method's line of the table, its results.csv row, and whether its interval was clipped to
    [0, 1]. `record`: its search's best.json (None: a reference at the default); `best`: its paper-style run."""
    method = row["method"]
    setting = f"{_setting(record['params'])} ({record['trials_complete']})" if record else "default"
    if method.startswith("mslr-"):
        setting += "; encoders at their unimodal rates"
    key = f"test_{metric}_fusion" if not is_unimodal(method) else f"test_{metric}_{unimodal_modality(method)}"
    values = [r[key] for r in runs]
    interval = t_interval(values)
    best_text = "–" if best is None else f"{100 * best[f'best_val_{metric}_fusion']:.1f} → {100 * best[key]:.1f}"
    mean, std = mean_std(values)
    clipped = interval is not None and (interval[0] < 0 or interval[1] > 1)
    cells = [report_name(method), setting, best_text, f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1
             else f"{100 * mean:.1f}", "–" if interval is None else
             f"{100 * max(interval[0], 0):.1f} to {100 * min(interval[1], 1):.1f}",
             *[cell(row, m) for m in modalities], cell(row, "delta")]
    csv_row = {"fusion": fusion, "method": method, "setting": setting, "seeds": len(values),
               "test_mean": mean, "test_std": std,
               "ci_low": None if interval is None else interval[0],
               "ci_high": None if interval is None else interval[1],
               "best_trial_val": None if best is None else best[f"best_val_{metric}_fusion"],
               "search_val": None if record is None else record["value"],
               "best_trial_test": None if best is None else best[key],
               **{f"{m}_mean": row[f"{m}_mean"] for m in modalities}}
    return "| " + " | ".join(cells) + " |", csv_row, clipped


def _reproduction_note(paper: dict, record_of: dict, metric: str) -> str:
    """Whether each chosen trial, retrained with its search's seed, gave the search's validation value
    again, and for those that did not, which provenance fields differ."""
    mismatched = [m for m, s in paper.items() if abs(s[f"best_val_{metric}_fusion"] - record_of[m]["value"]) > 1e-9]
    if not mismatched:
        return "The best trials retrained with the search's seed reproduce the search's validation values exactly."
    return (f"Retrained with the search's seed, {', '.join(mismatched)} did not reproduce the search's "
            "validation value exactly: " + "; ".join(
                f"{m} — " + (", ".join(provenance.differences(record_of[m].get("provenance"), paper[m].get("provenance") or {}))
                             or "made under the same provenance, which should not happen: please report it")
                for m in mismatched) + ". The best-trial column shows the retrained value.")
