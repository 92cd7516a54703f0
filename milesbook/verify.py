"""`milesbook verify PATH`: does a run, or a report, reproduce?

- A **run folder**: retrain its configuration from scratch (a temporary folder, the run's recorded
  threads) and compare `history.csv`, `test_history.csv` and `summary.json` cell by cell as written —
  bit for bit — except the wall-clock columns (`seconds`, `train_seconds`) and the provenance block.
  Under the recorded provenance (`milesbook.provenance.BITWISE_FIELDS`) the two must be identical:
  exit 0 when they are, 1 with the first differing epoch and column when not. Under another
  provenance (another CPU instruction set, torch build, …) bitwise equality is not expected: verify
  names the fields that differ, still reports the comparison, and exits 3 when the runs differ.
- A **report folder** (`report.json`, written by `compare` and `compare --from-search`): re-run its
  seeds from the recorded settings and check every cell of every row — bit for bit where the
  provenance matches, else statistically: the committed mean must lie inside the re-run's interval
  for the mean (t-interval over the seeds, family-wise 95 % by Bonferroni over the cells checked,
  never narrower than one test sample) — and every conclusion the report draws from a paired
  effect ("distinguishable from zero" or not) must come out the same. Exit 0 when all hold, 1 when not.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from . import handed, provenance, runs
from .errors import UserError
from .seed_stats import t_half_width

VERIFIED, DIFFERS, INCONCLUSIVE = 0, 1, 3
WALL_CLOCK = {"seconds", "train_seconds"}


def verify(path, epochs: int | None = None, methods: str | None = None, workers: int = 1, out=None,
           dataset: str | None = None, encoder: str | None = None) -> int:
    """Check the run or report at `path` (see the module docstring); prints what it finds and returns
    the exit status. A run made on data or with encoders given in memory needs them back: `dataset`
    (the path of the same data saved as a folder) and `encoder` ("MODALITY=package.module:factory,…",
    rebuilding the same initial weights)."""
    from .comparison import REPORT
    path = Path(path)
    if (path / REPORT).exists():
        if epochs is not None:
            raise UserError("--epochs applies to a run folder; a report is checked on all its epochs")
        only = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
        if dataset:
            raise UserError("--dataset applies to a run folder; a report re-runs its own settings")
        return verify_report(path, only=only, workers=workers, out=out, encoder=encoder)
    if (path / "config.json").exists():
        if methods is not None:
            raise UserError("--methods applies to a report folder (report.json); this is one run")
        return verify_run(path, epochs=epochs, out=out, dataset_path=dataset, encoder=encoder)
    raise UserError(f"{path} is neither a run folder (config.json) nor a report folder ({REPORT}); give the --out "
                    "of `milesbook train` or of `milesbook compare`")


# -- one run -----------------------------------------------------------------------------------------

def _rows(path: Path) -> list[dict]:
    """A table's rows as written (text cells: compared bit for bit), after checking it reads as one."""
    handed.read_table(path)
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def first_difference(recorded: list[dict], rerun: list[dict], name: str) -> str | None:
    """"history.csv, epoch 3, column u_audio: recorded 0.0125, re-run 0.0131" for the first cell (in
    epoch order) where two tables differ as written, or None when they agree (wall-clock columns aside)."""
    for i, (a, b) in enumerate(zip(recorded, rerun)):
        for key in dict.fromkeys([*a, *b]):
            if key not in WALL_CLOCK and a.get(key) != b.get(key):
                return f"{name}, epoch {a.get('epoch', i + 1)}, column {key}: recorded {a.get(key)}, re-run {b.get(key)}"
    if len(recorded) != len(rerun):
        return f"{name}: recorded {len(recorded)} epochs, re-run {len(rerun)}"
    return None


def _summary_difference(recorded: dict, rerun: dict) -> str | None:
    for key in dict.fromkeys([*recorded, *rerun]):
        if key not in WALL_CLOCK and key != "provenance" and recorded.get(key) != rerun.get(key):
            return f"summary.json, {key}: recorded {recorded.get(key)}, re-run {rerun.get(key)}"
    return None


def verify_run(run, epochs: int | None = None, out=None, dataset=None, progress: bool = True,
               dataset_path: str | None = None, encoder: str | None = None) -> int:
    """Retrain the run in `run` (its first `epochs` epochs, default all) and compare; returns the exit
    status (0 identical, 1 different under the recorded provenance, 3 different under another).
    `dataset_path` and `encoder` give back data and encoders the run was given in memory."""
    from .config import TrainConfig
    from .datasets import load_dataset
    from .train import factory_encoders, resolve_device, train
    run = Path(run)
    recorded = provenance.read(run)
    if recorded is None:
        raise UserError(f"{run} has no {provenance.FILE} (made before milesbook 0.2 recorded provenance): there is "
                        "nothing to check it against; retrain it with `milesbook train`")
    history = _rows(run / "history.csv") if (run / "history.csv").exists() else []
    if not history:
        raise UserError(f"{run} has no finished epoch (history.csv); nothing to verify")
    summary = runs.read_summary(run) if (run / "summary.json").exists() else None
    saved = handed.read_config(run / "config.json")
    # Nothing the folder names is imported unless you name it too (`handed.refuse_imports`).
    handed.refuse_imports(saved["encoder"], str(run / "config.json"), encoder)
    # The recorded device kind, never "auto": a CPU run verified on a GPU machine would prove nothing.
    config = replace(TrainConfig.from_dict(saved), device=recorded["device.kind"])
    # Counts come from what the folder holds: the epochs its history has, never what a file claims.
    why = _not_one_run(run, config, history, summary)
    if why:
        print(f"NOT REPRODUCED: {why}: the files do not describe one run")
        return DIFFERS
    if epochs is not None and not 1 <= epochs <= len(history):
        raise UserError(f"--epochs must be between 1 and the run's {len(history)} epochs, got {epochs}")
    checked = epochs or len(history)
    if recorded.get("data.origin") == "in memory" and dataset is None and dataset_path is None:
        raise UserError(f"{run} was trained on data given in memory ({recorded.get('data.name')}): verify cannot "
                        "rebuild it; save the same arrays as a folder (docs/datasets.md, \"Your own data\") and give --dataset PATH")
    if dataset is None and dataset_path is not None:
        from .datasets import from_folder
        dataset = from_folder(dataset_path)
        if recorded.get("data.origin") == "in memory":  # the run knew the data by the name it was given
            dataset = replace(dataset, name=recorded.get("data.name"))
        else:
            config = replace(config, dataset=dataset_path)
    data = dataset if dataset is not None else load_dataset(config.dataset, **config.dataset_options)
    encoders = _given_encoders(recorded, encoder, data, config, run)
    current = provenance.collect(resolve_device(config.device), config.threads, data,
                                 *factory_encoders(config, data, encoders))
    if recorded.get("encoders") != current.get("encoders"):
        raise UserError(f"the encoders given now are not those {run} was trained with (recorded "
                        f"{_identities(recorded)}; now {_identities(current)}): their code or initial weights changed")
    differ = provenance.differences(recorded, current)
    data_changed = recorded.get("data.fingerprint") != current.get("data.fingerprint")
    if data_changed:
        print(f"note: the data differs from what the run saw (fingerprint {recorded.get('data.fingerprint')}, "
              f"now {current['data.fingerprint']}): re-prepared or edited since, so the run cannot be re-made here")
    if differ:
        print("note: this machine's provenance differs from the run's — " + "; ".join(differ)
              + " — so bitwise equality is not expected; comparing all the same")
    place = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="milesbook-verify-"))
    try:
        rerun_dir = place / "rerun"
        if rerun_dir.exists():
            raise UserError(f"{rerun_dir} exists already; give another --out")
        print(f"retraining {run} ({config.method}, seed {config.seed}, {checked} epoch(s), {config.threads} thread(s), "
              f"{config.device}) in {rerun_dir}")

        whole = checked == len(history) and summary is not None  # the run's own end, summary included

        def enough(row: dict) -> None:  # the config's own epochs (a method's reference runs use them), cut short
            if int(row["epoch"]) > checked or (int(row["epoch"]) == checked and not whole):
                raise _Enough
        try:
            train(config, rerun_dir, dataset=data, progress=progress, encoders=encoders, on_epoch_end=enough)
        except _Enough:
            pass
        found = first_difference(history[:checked], _rows(rerun_dir / "history.csv")[:checked], "history.csv")
        files = ["history.csv"]
        if found is None and (run / "test_history.csv").exists():
            found = first_difference(_rows(run / "test_history.csv")[:checked],
                                     _rows(rerun_dir / "test_history.csv")[:checked], "test_history.csv")
            files.append("test_history.csv")
        if found is None and whole:
            if not (rerun_dir / "summary.json").exists():  # it trained past the recorded end
                found = f"summary.json: the run stopped after {checked} epochs, the re-run did not"
            else:
                found = _summary_difference(summary, json.loads((rerun_dir / "summary.json").read_text()))
            files.append("summary.json")
    finally:
        if out is None:
            shutil.rmtree(place, ignore_errors=True)
    if found is None:
        print(f"verified: {checked} epochs identical ({', '.join(files)}; wall-clock columns aside)")
        return VERIFIED
    if data_changed:
        print(f"not identical, as expected with other data: first difference in {found}")
        return INCONCLUSIVE
    if differ:
        print(f"not identical, as expected under another provenance: first difference in {found}")
        return INCONCLUSIVE
    print(f"NOT REPRODUCED under the same provenance: first difference in {found}")
    return DIFFERS


def _not_one_run(run: Path, config, history: list[dict], summary: dict | None) -> str | None:
    """Why the files of `run` cannot be one run's, or None: the summary's epochs, the config's and the
    history's must agree (only a method that stops early, MSES, ends before its config's epochs), and
    the reference runs a method trains first must have the config's epochs."""
    from .methods.base import unimodal_name
    done = len(history)
    if summary is not None and summary["epochs"] != done:
        return f"history.csv has {done} epochs but summary.json says {summary['epochs']}"
    if config.epochs < done or (summary is not None and config.epochs != done and config.method != "mses"):
        return f"config.json asks for {config.epochs} epochs but history.csv has {done}"
    if config.epochs > done and config.method.startswith("mslr-") and config.mslr_init == "unimodal":
        for m in config.mslr_lrs or {}:
            path = run / "init" / unimodal_name(m) / "history.csv"
            made = len(handed.read_table(path)) if path.exists() else 0
            if made != config.epochs:  # else re-making them would train epochs nothing here had
                return f"{path} has {made} epochs but config.json asks its reference runs for {config.epochs}"
    return None


def _identities(record: dict) -> str:
    given = record.get("encoders") or {}
    return ", ".join(f"{m}: {e['class']} {e['weights']} ({e.get('origin', 'in memory')})"
                     for m, e in sorted(given.items())) or "the built-in encoders"


def _given_encoders(recorded: dict, spec: str | None, data, config, run: Path) -> dict | None:
    """The encoders a run was given in memory, rebuilt from `--encoder MODALITY=package.module:factory`
    (their initial weights are checked through the provenance's `encoders` field)."""
    from .models import encoder_from_factory, parse_encoder_spec
    given = {m: e for m, e in (recorded.get("encoders") or {}).items() if e.get("origin", "in memory") == "in memory"}
    if not given:
        if spec and not handed.factory_kinds(config.encoder):
            raise UserError(f"{run} was trained with the encoders its config names ({config.encoder}); leave out --encoder")
        return None
    named = {m: kind for m, kind in parse_encoder_spec(spec, list(data.modalities)).items() if ":" in kind} if spec else {}
    missing = sorted(set(given) - set(named))
    if missing:
        raise UserError(f"{run} was trained with {', '.join(missing)} encoder(s) given in memory "
                        f"({', '.join(given[m]['class'] for m in missing)}): give them back with --encoder "
                        f"{missing[0]}=package.module:factory")
    return {m: encoder_from_factory(named[m], data.shapes[m], config.feature_dim) for m in given}


class _Enough(Exception):
    """Raised after the epochs `verify --epochs K` checks: the rest is not needed."""


# -- a report ----------------------------------------------------------------------------------------

def interval(values: list[float], level: float, resolution: float) -> tuple[float, float]:
    """The t-interval for the mean of `values` at confidence `level`, at least ±`resolution` wide."""
    mean = statistics.fmean(values)
    half = max(t_half_width(values, level), resolution)
    return mean - half, mean + half


def compare_records(committed: dict, rerun: dict, only=None) -> dict:
    """Cell by cell and conclusion by conclusion, a committed `report.json` against its re-run: returns
    {"identical", "cells": [(fusion, method, column, committed mean, low, high, inside)], "conclusions":
    [(fusion, name, committed verdict, re-run verdict)], "consistent"}."""
    from .methods.base import is_unimodal
    cells, identical = [], True
    for fusion, result in committed["fusion_results"].items():
        again = rerun["fusion_results"][fusion]["methods"]
        for method, entry in result["methods"].items():
            if only and not is_unimodal(method) and method not in only:
                continue
            for column, values in entry["values"].items():
                new = again[method]["values"][column]
                identical &= values == new
                cells.append((fusion, method, column, statistics.fmean(values), new))
    level = 1 - 0.05 / max(len(cells), 1)
    resolution = 1 / committed.get("test_size", math.inf)
    checked = []
    for fusion, method, column, mean, new in cells:
        low, high = interval(new, level, resolution)
        checked.append((fusion, method, column, mean, low, high, low - 1e-12 <= mean <= high + 1e-12))
    conclusions = []
    for fusion, result in committed["fusion_results"].items():
        for name, effect in result.get("effects", {}).items():
            again = rerun["fusion_results"][fusion]["effects"].get(name)
            if again is None and only:
                continue  # an effect of rows that were not re-run
            conclusions.append((fusion, name, effect["verdict"], again["verdict"] if again else "missing"))
            identical &= again is not None and effect["difference"] == again["difference"]
    holds = all(a == b for _, _, a, b in conclusions)
    consistent = all(c[-1] for c in checked) and holds
    identical &= holds
    return {"identical": identical, "cells": checked, "conclusions": conclusions, "consistent": consistent,
            "level": level}


def verify_report(folder, only=None, workers: int = 1, out=None, progress: bool = True,
                  encoder: str | None = None) -> int:
    """Re-run the seeds of the report in `folder` and compare (module docstring); returns the exit
    status. `encoder`: the `--encoder` you pass for a report whose runs used encoder code of yours."""
    from .comparison import REPORT, compare
    from .config import TrainConfig
    from .tuned import compare_tuned
    folder = Path(folder)
    committed = handed.read_report(folder)
    if committed["kind"] == "compare":
        handed.refuse_imports(committed["base"]["encoder"], str(folder / REPORT), encoder)
    if out is not None and Path(out).resolve().is_relative_to(folder.resolve()):
        raise UserError(f"--out {out} lies inside the report folder {folder}: its runs would be reused, not re-run, "
                        "and its files overwritten; give a folder outside it")
    place = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="milesbook-verify-"))
    try:
        if committed["kind"] == "compare":
            base = TrainConfig.from_dict(committed["base"])
            methods = [m for m in committed["methods"] if not only or m in only]
            missing = sorted(set(only or ()) - set(committed["methods"]))
            if missing:
                raise UserError(f"--methods {', '.join(missing)}: not in this report ({', '.join(committed['methods'])})")
            print(f"re-running {committed['dataset']}: {', '.join(methods)} and the unimodal references, "
                  f"{committed['seeds']} seed(s), in {place}")
            compare(committed["dataset"], methods, committed["fusions"], committed["seeds"], place, base,
                    progress=progress, workers=workers)
        else:
            search_dir = (folder / committed["search_dir"]).resolve()
            print(f"re-running the tuned comparison of {search_dir}, {committed['seeds']} seed(s), in {place}")
            compare_tuned(search_dir, committed["seeds"], place, workers=workers, progress=progress, only=only,
                          encoder=encoder)
        rerun = json.loads((place / REPORT).read_text())
        csv_checked = only is None and (folder / "results.csv").exists()  # the table people read
        same_csv = not csv_checked or (folder / "results.csv").read_bytes() == (place / "results.csv").read_bytes()
    finally:
        if out is None:
            shutil.rmtree(place, ignore_errors=True)
    result = compare_records(committed, rerun, only)
    mine, theirs = rerun.get("provenance"), committed.get("provenance")
    same = mine is not None and theirs is not None and not provenance.differences(theirs, mine)
    print(f"committed: {committed.get('made_under', 'no provenance recorded').removeprefix('Made under: ')}")
    print(f"re-run:    {rerun.get('made_under', '').removeprefix('Made under: ')}")
    for fusion, method, column, mean, low, high, inside in result["cells"]:
        print(f"  {fusion:6s} {method:16s} {column:14s} committed {100 * mean:6.2f}  re-run interval "
              f"{100 * max(low, 0):6.2f} to {100 * min(high, 1):6.2f}  {'ok' if inside else 'OUTSIDE'}")
    for fusion, name, before, after in result["conclusions"]:
        print(f"  {fusion:6s} {name}: committed '{before}', re-run '{after}' — "
              f"{'holds' if before == after else 'DOES NOT HOLD'}")
    cells = len(result["cells"])
    if result["identical"] and same_csv:
        print(f"verified: {cells} cells and every conclusion identical, bit for bit"
              + (" (and results.csv byte for byte)" if csv_checked else ""))
        return VERIFIED
    if result["identical"]:
        print("NOT REPRODUCED: report.json agrees but results.csv does not: the committed table was edited")
        return DIFFERS
    if same:
        print(f"NOT REPRODUCED: the re-run was made under the same provenance but {cells} cells are not all identical")
        return DIFFERS
    outside = sum(not c[-1] for c in result["cells"])
    broken = sum(a != b for _, _, a, b in result["conclusions"])
    if result["consistent"]:
        print(f"consistent: under another provenance (bitwise equality not expected), every committed mean lies "
              f"inside the re-run's interval (family-wise 95 %, {cells} cells) and every conclusion holds")
        return VERIFIED
    print(f"NOT CONSISTENT: {outside} of {cells} cells outside the re-run's interval, {broken} conclusion(s) changed")
    return DIFFERS
