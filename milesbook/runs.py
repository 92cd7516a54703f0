"""The run folder: what one training run leaves behind, and what notebooks, `compare` and the
search read back. Every file is written atomically (`milesbook.atomic`: a temporary file, then a rename),
so a killed run never leaves half a file; `last.pt` is written before the tables that mention its epoch.

- `config.json`   — the TrainConfig (`TrainConfig.to_dict()`: general settings and method knobs, flat);
- `history.csv`   — one row per epoch: `epoch`, `lr_fusion`, `lr_<m>` (rates used during the epoch),
  `train_loss`, `train_acc_*`, `val_loss_fusion`, `val_acc_fusion`, `val_acc_<m>` (the modality
  metric the method uses), `val_acc_head_<m>`, `val_acc_part_<m>` (both readings), `u_<m>` and
  `delta` (end of the epoch, for every method), the method's own columns, `seconds` (the epoch's
  whole wall time: the method's work, training, validation, test and the epoch's checkpoint — all but
  the writing of these tables; the copy of the history inside `last.pt` holds its last epoch's time
  without the checkpoint);
- `test_history.csv` — the test metrics of every epoch, kept apart so that nothing selects on them;
  they let the summary report the test score at any validation-chosen epoch without saving weights.
  A run with `TrainConfig.test_split` off (a search's trial) never evaluates test: no such file, and
  no `test_*` keys in its summary;
- `summary.json`  — `best_epoch`, `test_acc_fusion`, `test_acc_<m>` at the best epoch, the same at
  the strict-rule epoch (`strict_*`) and at the last epoch (`last_*`), the run's totals, and which
  logits its columns read: `modality_reading` ("head" or "part": what `_acc_<m>` is) and `heads`
  ("trained", "probes" — detached linear probes on a method that trains no heads — or "untrained"),
  and how the method predicts, `inference` ("fusion head", or e.g. MLA's entropy-weighted logits);
- `provenance.json` — the conditions the run was made under (`milesbook.provenance`: code and results
  version, torch build, device and CPU capability, threads, determinism, the data's fingerprint), also
  copied into `summary.json` as `provenance`. A finished run is reused only under the same results
  version, threads, device kind and data; a run is resumed only under the same provenance;
- `last.pt` — the checkpoint after every epoch, for `resume`;
- `selected.pt` — the model's weights (`state_dict`) at the selected epoch: the model whose test
  numbers the summary reports, and what a later run can start from (MSLR's published variant). While
  training, `candidates/` holds the weights of every epoch that can still be selected (within the
  tolerance of the best validation value so far); `finish` keeps the chosen one and removes the rest.

Metric columns are named `<split>_<metric>_<who>`: the metric is `acc` on single-label data and
`f1micro` / `f1macro` on multi-label data (`milesbook.metrics`; the first is the headline M used for
utilization and selection, named in `summary.json` as `metric`); above, `acc` stands for it.

Best epoch (`select_best_epoch`): among the epochs whose validation fusion accuracy is within
`selection_tolerance` (default 0.005, half a point) of the highest, the one with the lowest validation
fusion loss; exact ties go to the later epoch. Validation fusion accuracy saturates near 100 % early on
easy data; taking the first maximum would pick an epoch whose weak encoder is still under-trained (a
single lucky epoch at 100 % beats fifty at 99.8 %). The strict rule (tolerance 0) is reported too.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from . import handed, provenance
from .atomic import atomic_write, write_text
from .config import relevant_config
from .errors import UserError
from .safe_load import load_tensors

CHECKPOINT = "last.pt"
SELECTED = "selected.pt"
CANDIDATES = "candidates"
# every file milesbook writes into a run folder (beside the candidates folder)
RUN_FILES = ("config.json", "provenance.json", "history.csv", "test_history.csv", "summary.json",
             CHECKPOINT, SELECTED)
def write_json(path: Path, value) -> None:
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(value, indent=2) + "\n"))


def save_figure(figure, path: Path, **options) -> None:
    """A figure as PNG, written whole (and never through a link that stood in its place)."""
    atomic_write(Path(path), lambda p: figure.savefig(p, format="png", **options))


def write_history(path: Path, rows: list[dict]) -> None:
    def write(p):
        with open(p, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(Path(path), write)


def read_history(run_dir) -> list[dict]:
    """history.csv as a list of {column: float} rows (`handed.read_table`: a malformed one is one line)."""
    return handed.read_table(Path(run_dir) / "history.csv")


def best_on_test(run_dir, metric: str) -> dict:
    """The paper's reading of a finished run: its test metrics at the epoch with the highest test
    fusion `metric` (the first such epoch), keyed as summary.json's with the prefix "oracle_"
    ({"oracle_epoch": e, "oracle_test_<metric>_fusion": …, "oracle_test_<metric>_<m>": …}); empty when
    the run never read test. Nothing selects on it: it measures how much choosing the epoch on test —
    as the MILES paper and the official ARL, AUG and Remix scripts report — flatters a number."""
    path = Path(run_dir) / "test_history.csv"
    if not path.exists():
        return {}
    rows = handed.read_table(path)
    if not rows:
        return {}
    key = f"test_{metric}_fusion"
    best = max(rows, key=lambda row: (row[key], -row["epoch"]))  # the first epoch at the maximum
    return {"oracle_epoch": int(best["epoch"]),
            **{f"oracle_{column}": value for column, value in best.items() if column.startswith("test_")}}


def history_metric(row: dict) -> str:
    """The headline metric a history (or summary) row is written in: "acc" or "f1micro"."""
    if "metric" in row:
        return row["metric"]
    return "f1micro" if any("_f1micro_" in f"_{key}" for key in row) else "acc"


def select_best_epoch(history: list[dict], tolerance: float = 0.0, metric: str = "acc") -> int:
    """The epoch (1-based `epoch` value) chosen on validation: among rows whose `val_<metric>_fusion`
    is within `tolerance` of the maximum, the lowest `val_loss_fusion`; exact ties go to the later epoch."""
    key = f"val_{metric}_fusion"
    top = max(row[key] for row in history)
    tied = [row for row in history if row[key] >= top - tolerance]
    return int(min(tied, key=lambda row: (row["val_loss_fusion"], -row["epoch"]))["epoch"])


def _config_difference(saved: dict, mine: dict, ignore=()) -> list[str]:
    """The results-changing settings (`relevant_config`) on which two configs disagree."""
    saved, mine = relevant_config(saved), relevant_config(mine)
    return sorted(k for k in mine.keys() | saved.keys() if k not in ignore and saved.get(k) != mine.get(k))


def _epochs_done(folder: Path) -> int:
    """How many epochs the run in `folder` has finished (its history.csv rows)."""
    path = Path(folder) / "history.csv"
    return len(handed.read_table(path)) if path.exists() else 0


def why_not_continued(folder, config: dict, current: dict) -> str | None:
    """Why the run in `folder` cannot be continued as a run of `config` under the provenance `current`
    (None when it can): another configuration (the epochs may only grow), or other conditions
    (`BITWISE_FIELDS`: resuming would make its later epochs under other conditions than the first)."""
    folder = Path(folder)
    saved = folder / "config.json"
    if not saved.exists():
        return "it holds a checkpoint without config.json" if (folder / CHECKPOINT).exists() else None
    keys = _config_difference(handed.read_config(saved), config, ignore=("epochs",))
    if keys:
        return f"its configuration differs ({', '.join(keys)})"
    done = _epochs_done(folder)
    if done > config["epochs"]:
        return f"it has {done} epochs, more than the {config['epochs']} asked for"
    differ = provenance.differences(provenance.read(folder), current)
    if differ:
        return "made under other conditions (it cannot be continued): " + ", ".join(differ)
    return None


def reusable(folder, config: dict, current: dict) -> tuple[dict | None, str | None]:
    """What `folder` offers a run of `config` (a `to_dict()`) under the provenance `current`
    (`milesbook.provenance.collect`): (its summary, None) when it holds that run finished under the
    same `REUSE_FIELDS`; (None, None) when it is empty or holds the same run unfinished (or with fewer
    epochs) under the same `BITWISE_FIELDS`, which training continues; else (None, why it cannot be used)."""
    folder = Path(folder)
    saved = folder / "config.json"
    if (folder / "summary.json").exists() and saved.exists() and \
            not _config_difference(handed.read_config(saved), config):
        differ = provenance.differences(provenance.read(folder), current, provenance.REUSE_FIELDS)
        if not differ:
            return read_summary(folder), None
        return None, "made under other conditions: " + ", ".join(differ)
    return None, why_not_continued(folder, config, current)


def read_summary(folder) -> dict:
    """A finished run's summary.json, checked (`handed.check_summary_values`)."""
    path = Path(folder) / "summary.json"
    return handed.check_summary_values(handed.read_json(path), str(path))


def move_aside(folder) -> Path:
    """Rename a run folder that cannot be reused to `<name>.stale-<k>` beside it (nothing is lost)."""
    folder = Path(folder)
    k = 1
    while folder.with_name(f"{folder.name}.stale-{k}").exists():
        k += 1
    aside = folder.with_name(f"{folder.name}.stale-{k}")
    os.replace(folder, aside)
    return aside


def load_checkpoint(path: Path, device="cpu"):
    """A checkpoint or weights file of a run folder, read without running anything in it
    (`safe_load.load_tensors`); a bad one is one line."""
    handed.regular_file(path)
    return load_tensors(path, device, remedy="delete it, or train into another --out")


_REMEDY = "it is not a checkpoint milesbook wrote (edited, or from another program); train into another --out"


def _check_weights(weights, path: Path) -> dict:
    """A `state_dict`: names to tensors."""
    if not isinstance(weights, dict) or not weights or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise UserError(f"{path} does not hold a model's weights (names → tensors); {_REMEDY}")
    return weights


def load_weights(path: Path, device="cpu") -> dict:
    """selected.pt ({"epoch", "model"}), checked."""
    saved = load_checkpoint(path, device)
    if not isinstance(saved, dict) or not isinstance(saved.get("epoch"), int) or isinstance(saved.get("epoch"), bool) \
            or saved["epoch"] < 1:
        raise UserError(f"{path} does not hold {{epoch, model}}; {_REMEDY}")
    _check_weights(saved.get("model"), path)
    return saved


_CHECKPOINT_KEYS = {"epoch": int, "model": dict, "optimizer": dict, "method": dict, "generator": torch.Tensor,
                    "torch_rng": torch.Tensor, "history": list, "test_history": list, "config": dict}


def load_resume_state(path: Path, device="cpu") -> dict:
    """last.pt, checked for the structure `Trainer._checkpoint` writes (the trainer then checks that
    the weights fit its model); a checkpoint of another structure is one line."""
    state = load_checkpoint(path, device)
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a checkpoint; {_REMEDY}")
    for key, kind in _CHECKPOINT_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise UserError(f"{path}: {key} is {type(state.get(key)).__name__ if key in state else 'missing'}, "
                            f"not a {kind.__name__}; {_REMEDY}")
    _check_weights(state["model"], path)
    rows = state["history"]
    if state["epoch"] != len(rows) or not all(isinstance(r, dict) for r in [*rows, *state["test_history"]]):
        raise UserError(f"{path}: its epoch ({state['epoch']}) and its history ({len(rows)} rows) disagree; {_REMEDY}")
    return state


def check_resumable(folder, config: dict, current: dict) -> None:
    """Raise a one-line UserError when the run in `folder` cannot be continued (`why_not_continued`)."""
    why = why_not_continued(folder, config, current)
    if why is not None:
        raise UserError(f"{folder} cannot be resumed: {why}; resume it with the flags (e.g. --threads) and on the "
                        "machine it was made with, or train into another --out")


def start(folder: Path, config: dict, resume: bool, device, current: dict) -> dict | None:
    """Open `folder` for a run of `config` under the provenance `current` and write its config.json
    and provenance.json. A fresh run refuses a folder that already holds one; `resume` returns the
    checkpoint (None when there is none yet) after checking that it was made with the same
    results-changing settings (the epochs may grow) under the same `BITWISE_FIELDS`."""
    folder.mkdir(parents=True, exist_ok=True)
    handed.check_run_members(folder, RUN_FILES, CANDIDATES)
    path = folder / CHECKPOINT
    state = None
    if not resume and path.exists():
        raise UserError(f"{folder} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and path.exists():
        check_resumable(folder, config, current)
        state = load_resume_state(path, device)
        if (folder / SELECTED).exists():
            load_weights(folder / SELECTED)  # checked now: `reopen` must not fail after the summary is gone
    else:
        write_json(folder / provenance.FILE, current)
        write_json(folder / "config.json", config)
    return state


def reopen(folder: Path, config: dict) -> None:
    """A resumed run, once its checkpoint has been checked and restored: record the (possibly longer)
    configuration, and take back the summary of a finished run — it describes fewer epochs than the run
    will have, and must not be taken for the new run's if this one is killed before it finishes. Its
    selected epoch becomes a candidate again, like any other (pruned if the new epochs put it out of reach)."""
    folder = Path(folder)
    write_json(folder / "config.json", config)
    (folder / "summary.json").unlink(missing_ok=True)
    path = folder / SELECTED
    if path.exists():
        saved = load_weights(path)
        save_candidate(folder, saved["epoch"], saved["model"])
        path.unlink()


def save_checkpoint(folder: Path, checkpoint: dict) -> None:
    """After an epoch, first: `last.pt`, which a resumed run continues from."""
    atomic_write(folder / CHECKPOINT, lambda p: torch.save(checkpoint, p))


def write_tables(folder: Path, history: list[dict], test_history: list[dict]) -> None:
    """After the checkpoint: the tables that now include the epoch (a kill between the two leaves
    tables one epoch behind the checkpoint, never ahead of it)."""
    write_history(folder / "history.csv", history)
    if test_history:  # empty when the run never reads test (`TrainConfig.test_split` off)
        write_history(folder / "test_history.csv", test_history)


def can_be_selected(history: list[dict], tolerance: float, metric: str) -> set[int]:
    """The epochs of `history` that the selection rule may still choose however training goes on:
    those within `tolerance` of the best validation fusion value so far (the best only rises)."""
    key = f"val_{metric}_fusion"
    top = max(row[key] for row in history)
    return {int(row["epoch"]) for row in history if row[key] >= top - tolerance}


def save_candidate(folder: Path, epoch: int, weights: dict) -> None:
    """candidates/epoch<e>.pt: the weights validation scored at `epoch`, which may yet be selected.
    Written before `save_checkpoint`, so a checkpoint never names an epoch whose candidate is missing."""
    atomic_write(Path(folder) / CANDIDATES / f"epoch{epoch}.pt", lambda p: torch.save(weights, p))


def prune_candidates(folder: Path, history: list[dict], tolerance: float, metric: str) -> None:
    """Drop the candidates no epoch of the (checkpointed) `history` can bring back. Called after
    `save_checkpoint`: a run killed before it re-trains that epoch and still finds every candidate."""
    alive = can_be_selected(history, tolerance, metric)
    for path in _candidates(folder):
        if int(path.stem.removeprefix("epoch")) not in alive:
            path.unlink(missing_ok=True)


def _candidates(folder: Path) -> list[Path]:
    """candidates/epoch<e>.pt, each checked to be a regular file (never a link) before any is removed."""
    place = Path(folder) / CANDIDATES
    handed.refuse_link(place, "folder")
    if not place.is_dir():
        return []
    members = list(place.iterdir())
    for path in members:
        handed.refuse_link(path, "file")
    return [p for p in members if p.name.startswith("epoch") and p.suffix == ".pt"
            and p.stem.removeprefix("epoch").isdigit()]


def _keep_selected(folder: Path, best: int) -> None:
    """The chosen epoch's candidate becomes selected.pt ({"epoch", "model"}); the rest go. When it is
    missing (a run extended after finishing, whose new choice is an older epoch no longer kept),
    there is no selected.pt rather than another epoch's weights."""
    place = Path(folder) / CANDIDATES
    members = _candidates(folder)  # every member checked before anything is removed
    if not place.is_dir():
        return
    chosen = place / f"epoch{best}.pt"
    if chosen.exists():
        weights = _check_weights(load_checkpoint(chosen), chosen)
        atomic_write(Path(folder) / SELECTED, lambda p: torch.save({"epoch": best, "model": weights}, p))
    for path in members:
        path.unlink(missing_ok=True)
    if not any(place.iterdir()):  # anything we did not write there stays
        place.rmdir()


def selected_weights(folder, device="cpu") -> dict:
    """The `state_dict` of a finished run's selected epoch (`selected.pt`)."""
    path = Path(folder) / SELECTED
    if not path.exists():
        raise UserError(f"{folder} has no {SELECTED} (its selected epoch's weights were not kept: a run from "
                        "before milesbook kept them, or one extended after finishing); train it into an empty folder")
    return load_weights(path, device)["model"]


def finish(folder: Path, config: dict, history: list[dict], test_history: list[dict], *,
           modalities, task: str, metric: str, metrics: tuple[str, ...], device: str,
           modality_reading: str, heads: str, inference: str = "fusion head", method_entries: dict | None = None) -> dict:
    """Choose the best epoch on validation (on the headline `metric`) and write summary.json with the
    test metrics at it, at the strict-rule epoch and at the last epoch."""
    tolerance = config["selection_tolerance"]
    best = select_best_epoch(history, tolerance, metric)
    strict = select_best_epoch(history, 0.0, metric)
    # Without a test split (a search's trial), the summary has no test_* keys at all.
    at = {e: test_history[e - 1] if test_history else {} for e in (best, strict, len(history))}
    summary = {"method": config["method"], "fusion": config["fusion"], "seed": config["seed"],
               "dataset": config["dataset"], "modalities": list(modalities),
               "task": task, "metric": metric, "metrics": list(metrics),
               "modality_reading": modality_reading, "heads": heads, "inference": inference,
               "epochs": len(history), "best_epoch": best, "strict_best_epoch": strict,
               "selection": f"val_{metric}_fusion within {tolerance} of the max, then "
                            "min val_loss_fusion, then later epoch",
               **{k: v for k, v in at[best].items() if k != "epoch"},
               **{f"strict_{k}": v for k, v in at[strict].items() if k != "epoch"},
               **{f"last_{k}": v for k, v in at[len(history)].items() if k != "epoch"},
               **{f"best_{k}": v for k, v in history[best - 1].items() if k.startswith("val_")},
               "train_seconds": sum(r["seconds"] for r in history), "device": device,
               **(method_entries or {}), "provenance": provenance.read(folder)}
    _keep_selected(folder, best)
    write_json(folder / "summary.json", summary)
    return summary
