"""What a search reports: the chosen trial (and the rule that breaks near-ties), trials.csv, the
status text, best.json and the plots."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
from optuna.trial import TrialState

from ..methods import SearchRange
from .. import provenance
from ..handed import printable
from ..runs import atomic_write, save_figure, write_json
from .draws import FOLDER, NOTE, PROVENANCE, RETRY_OF, draw_numbers, draw_of, tally
from .space import describe_range, trial_config
from .study import Job, shown_url


def chosen_trial(study, tolerance: float | None = None):
    """The trial a search picks, by the rule the trainer uses for epochs: among COMPLETE trials within
    `tolerance` (the study's `selection_tolerance`) of the best validation value, the lowest
    validation fusion loss at its chosen epoch; exact ties go to the earlier draw. None if none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    if tolerance is None:
        tolerance = study.user_attrs.get("definition", {}).get("config", {}).get("selection_tolerance", 0.0)
    top = max(t.value for t in complete)
    tied = [t for t in complete if t.value >= top - tolerance]
    draws = draw_numbers(study.get_trials(deepcopy=False))
    return min(tied, key=lambda t: (t.user_attrs.get("val_loss_fusion", math.inf), draws[t.number]))


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, draw, retry_of, each parameter, value, the validation
    loss and modality metrics at its chosen epoch, best_epoch, seconds, run_folder, note."""
    trials = study.get_trials(deepcopy=False)
    draws = draw_numbers(trials)
    names = list(study.user_attrs.get("definition", {}).get("space", {})) or \
        sorted({p for t in trials for p in t.params})
    extra = sorted({k for t in trials for k in t.user_attrs if k.startswith("val_") and k != "val_loss_fusion"})
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append({"number": t.number, "state": t.state.name, "draw": draws[t.number], "retry_of": a.get(RETRY_OF, ""),
                     **{n: t.params.get(n, "") for n in names}, "value": "" if t.value is None else t.value,
                     "val_loss_fusion": a.get("val_loss_fusion", ""), **{k: a.get(k, "") for k in extra},
                     "best_epoch": a.get("best_epoch", ""), "seconds": a.get("seconds", ""),
                     "run_folder": a.get(FOLDER, ""), "note": a.get(NOTE, "")})
    return rows


def write_trials_csv(study, out) -> Path:
    """DIR/trials.csv from the storage (atomically: a reader never sees half a table)."""
    rows = trial_rows(study)
    path = Path(out) / "trials.csv"
    header = list(rows[0]) if rows else ["number", "state", "draw", "value", "run_folder"]
    lines = [header] + [[row[k] for k in header] for row in rows]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(lines)
    atomic_write(path, write)
    return path


def study_status(study) -> dict:
    """Counts by state, the space with its sources, sampler, pruner, and the chosen trial."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    definition = study.user_attrs.get("definition", {})
    sources = study.user_attrs.get("space_sources", {})
    best = chosen_trial(study)
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: -t.value)
    tolerance = definition.get("config", {}).get("selection_tolerance", 0.0)
    tied = sum(t.value >= complete[0].value - tolerance for t in complete) if complete else 0
    # One reported value per trained epoch: what a pruner saves shows here, whatever else the machine did.
    epochs = sum(len(t.intermediate_values) for t in trials)
    return {"study": study.study_name, "counts": counts, "trials_asked": study.user_attrs.get("trials_asked"),
            "epochs_trained": epochs,
            "sampler": definition.get("sampler", "?"), "pruner": definition.get("pruner", "?"),
            "seed": definition.get("config", {}).get("seed"),
            "tolerance": tolerance, "tied": tied,
            "space": {n: (SearchRange(**{**r, "choices": tuple(r["choices"])}), sources.get(n, ""))
                      for n, r in definition.get("space", {}).items()},
            "chosen": best, "top": complete[:5],
            "made_under": provenance.summarize_many([t.user_attrs.get(PROVENANCE) for t in complete]) if complete else ""}


def format_status(status: dict, storage: str) -> str:
    """The report `milesbook search` and `--status` print: which sampler, pruner and trial count
    produced it, the space and where each range comes from, the chosen trial and its rivals."""
    c = status["counts"]
    lines = [f"study {printable(status['study'])} in {printable(storage)}",
             f"  sampler {status['sampler']} (seed {status['seed']}), pruner {status['pruner']}; trials: "
             f"{c['complete']} complete, {c['pruned']} pruned (of --trials {status['trials_asked']}), "
             f"{c['fail']} failed, {c['running']} running, {c['waiting']} queued; "
             f"{status.get('epochs_trained', 0)} epochs trained in all",
             "  space:"]
    width = max([len(n) for n in status["space"]] + [2])
    for name, (r, source) in status["space"].items():
        lines.append(f"    {name:{width}s}  {describe_range(r):28s} {source}")
    best = status["chosen"]
    if best is None:
        lines.append("  no complete trial yet")
        return "\n".join(lines)
    params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
    lines += [f"  chosen: trial {best.number} (draw {draw_of(best)}) — validation {best.value:.4f} at epoch "
              f"{best.user_attrs.get('best_epoch')}, loss {best.user_attrs.get('val_loss_fusion', math.nan):.4f}; {params}",
              f"  rule: among complete trials within {status['tolerance']} of the best validation fusion value "
              f"({status['tied']} here), the lowest validation fusion loss (at each one's chosen epoch), then the "
              "earlier draw",
              "  top trials by validation fusion value (each modality's validation value beside it):"]
    for t in status["top"]:
        modal = ", ".join(f"{k.removeprefix('val_')} {v:.4f}" for k, v in sorted(t.user_attrs.items())
                          if k.startswith("val_") and k != "val_loss_fusion")
        lines.append(f"    trial {t.number:3d}: {t.value:.4f} (loss {t.user_attrs.get('val_loss_fusion', math.nan):.4f}; "
                     f"{modal}) {', '.join(f'{k}={_short(v)}' for k, v in t.params.items())}")
    if status.get("made_under"):
        lines.append(f"  {status['made_under']}")
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def save_plots(study, out) -> list[Path]:
    """history.png (value per trial, best so far) and params.png (value against each parameter) in
    `out`, with Optuna's matplotlib plots; nothing (no error) before two trials are complete."""
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return []
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from optuna.visualization import matplotlib as oplt
    saved = []
    # Optuna switches matplotlib to its ggplot style globally; rc_context puts the caller's style back.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, plot in (("history.png", oplt.plot_optimization_history), ("params.png", oplt.plot_slice)):
            try:
                axes = np.asarray(plot(study, target_name="validation fusion metric")).flat
                for ax in axes:  # log axes: the minor tick labels (2×10⁻⁴, 3×10⁻⁴, …) overprint
                    if ax.get_xscale() == "log":
                        ax.xaxis.set_minor_formatter(NullFormatter())
                figure = axes[0].figure
                save_figure(figure, Path(out) / name, dpi=100, bbox_inches="tight")
                plt.close(figure)
                saved.append(Path(out) / name)
            except Exception:  # a plot is a convenience; the study and trials.csv are the results
                pass
    return saved


def write_best(study, out, job: Job) -> dict | None:
    """DIR/best.json: the chosen trial's parameters and full config, for training it again on seeds."""
    best = chosen_trial(study)
    if best is None:
        return None
    config = trial_config(job.config, best.params, job.modalities)
    record = {"study": study.study_name, "storage": shown_url(job.storage), "sampler": job.sampler,
              "pruner": job.pruner, "trials_complete": len(tally(study.get_trials()).complete),
              "trials_pruned": len(tally(study.get_trials()).pruned),
              "trial": best.number, "draw": draw_of(best), "value": best.value,
              "val_loss_fusion": best.user_attrs.get("val_loss_fusion"), "best_epoch": best.user_attrs.get("best_epoch"),
              "params": best.params, "run_folder": best.user_attrs.get(FOLDER),
              "rule": f"among complete trials within {config.selection_tolerance} of the best validation fusion value, "
                      "the lowest validation fusion loss, then the earlier draw",
              "config": config.to_dict(),
              "provenance": best.user_attrs.get(PROVENANCE)}
    write_json(Path(out) / "best.json", record)
    return record
