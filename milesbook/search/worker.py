"""A search worker: the loop that takes trials of a study until enough draws are complete, one
trial's training through the one trainer, and the process that `--workers K` starts."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ..errors import NonFiniteLossError, UserError
from .draws import DRAW, FOLDER, NOTE, PROVENANCE, RETRY_OF, Heartbeat, draw_numbers, give_back, recover, tally, verdict
from .report import write_trials_csv
from .space import suggest, trial_config
from .study import Job


class _Lost(Exception):
    """This worker's trial was failed by another worker (its heartbeat was late): drop it."""


def run_worker(job: Job, data=None, on_trial_end=None) -> None:
    """Run trials of the job's study until `job.trials` draws are finished (complete or pruned): give back lost trials,
    wait while others run the last draws, else ask for a trial (a queued retry first) and run it.
    `on_trial_end(study)` runs after each trial this worker finished."""
    from ..datasets import load_dataset
    study = job.study()
    config = job.config
    data = data if data is not None else load_dataset(config.dataset, **config.dataset_options)
    while True:
        trials = study.get_trials(deepcopy=False)
        if recover(study, trials, job.grace):
            continue
        t = tally(trials)
        if len(t.finished) >= job.trials:
            return
        if not t.waiting and len(t.finished) + len(t.running) >= job.trials:
            time.sleep(job.poll)  # the last draws are running elsewhere; one may still fail
            continue
        trial = study.ask()
        beat = Heartbeat(trial.storage, trial._trial_id, job.heartbeat)
        try:
            if RETRY_OF not in trial.user_attrs:
                trial.set_user_attr(DRAW, draw_numbers(study.get_trials(deepcopy=False))[trial.number])
            reason = verdict(study, trial, job.trials)
            if reason:
                trial.set_user_attr(NOTE, reason)
                study.tell(trial, state=TrialState.FAIL)
            else:
                run_trial(study, trial, job, data, beat)
        except BaseException as error:  # e.g. Ctrl-C before training began: never leave it running
            if trial.storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                give_back(study, trial, f"interrupted ({type(error).__name__}) — the draw runs again as a new trial")
            raise
        finally:
            beat.stop()
        if on_trial_end is not None:
            on_trial_end(study)


def run_trial(study, trial, job: Job, data, beat: Heartbeat) -> None:
    """Train one trial into DIR/trials/<number>/ and tell the study how it ended."""
    from ..metrics import task_of
    from ..train import train
    metric = task_of(data.task).headline
    params = {name: suggest(trial, name, r) for name, r in job.space.items()}
    config = trial_config(job.config, params, job.modalities)
    folder = Path(job.out) / "trials" / str(trial.number)
    trial.set_user_attr(FOLDER, str(Path("trials") / str(trial.number)))

    def report(row: dict) -> None:
        if beat.lost:
            raise _Lost
        trial.report(row[f"val_{metric}_fusion"], int(row["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned

    try:
        summary = train(config, folder, dataset=data, progress=False, on_epoch_end=report)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except NonFiniteLossError as error:  # this draw diverges: its result, not a loss of the worker
        trial.set_user_attr(NOTE, f"diverged: {error}"[:300])
        study.tell(trial, state=TrialState.FAIL)
        return
    except (_Lost, UpdateFinishedTrialError):
        return  # another worker failed it as lost and queued its draw again
    except BaseException as error:  # Ctrl-C, a crash: the draw runs again when the search continues
        give_back(study, trial, f"interrupted ({type(error).__name__}) — the draw runs again as a new trial")
        raise
    for key in ("best_epoch", "best_val_loss_fusion", *[f"best_val_{metric}_{m}" for m in summary["modalities"]]):
        trial.set_user_attr(key.removeprefix("best_") if key != "best_epoch" else key, summary[key])
    trial.set_user_attr("seconds", round(summary["train_seconds"], 2))
    trial.set_user_attr(PROVENANCE, summary["provenance"])  # in the storage: it travels with the study
    try:
        study.tell(trial, summary[f"best_val_{metric}_fusion"])
    except UpdateFinishedTrialError:
        pass  # failed as lost a moment ago: its retry counts instead


def spawned_worker(job: Job, errors) -> None:
    """A worker process of `search(workers=K)`; it ends with its parent. Each trial trains with the
    config's own `threads` (the numbers must not depend on how many workers share the machine)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parent = os.getppid()

    def watch_parent():  # a killed parent must not leave workers training on
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        run_worker(job, on_trial_end=lambda study: write_trials_csv(study, job.out))
    except UserError as error:
        errors.send(str(error))
        raise SystemExit(2)
    except KeyboardInterrupt:
        raise SystemExit(130)
