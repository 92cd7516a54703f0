"""`milesbook search`: the MILES paper's protocol — the best of N random hyper-parameter draws per
method, chosen on validation — as one Optuna study per (dataset, method, fusion).

Every trial trains through the one trainer (`milesbook.train.train`) with the test split switched
off (`TrainConfig.test_split=False`) into `DIR/trials/<number>/`, reports the validation fusion
metric after every epoch (for pruners) and returns it at the epoch the selection rule picks
(`summary["best_val_<metric>_fusion"]`).

    space.py    what a method's search draws (`LR_RANGE`, `search_space`, `--space FILE`)
    sampler.py  `DrawSampler` (draw k depends only on the seed and k), TPE, the pruners
    draws.py    draws, retries of lost trials, heartbeats: kills and many workers
    study.py    the storage, the study's definition and name, one study per folder
    worker.py   the loop that runs trials, and the processes of `--workers K`
    report.py   the chosen trial, trials.csv, the status text, best.json, the plots

Files in DIR: `search.journal` (the default storage: Optuna's JournalStorage with its file backend;
it opens in `optuna-dashboard` unchanged), `study.json` (the study and storage DIR belongs to),
`trials.csv` (rewritten after every trial), `best.json` (the chosen trial), `history.png`, `params.png`.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..config import TrainConfig
from ..errors import UserError, check_choice
from ..methods.base import is_unimodal
from .draws import GRACE_S, HEARTBEAT_S, is_lost, tally
from .report import (chosen_trial, format_status, save_plots, study_status, trial_rows,
                     write_best, write_trials_csv)
from .sampler import PRUNERS, SAMPLERS, DrawSampler, make_pruner, make_sampler, stable_hash
from .space import LR_RANGE, describe_range, read_space_file, search_space, trial_config
from .study import JOURNAL, Job, cut_record_bytes, default_study_name, definition_of, open_storage, open_study, shown_url
from .worker import run_worker, spawned_worker

__all__ = ["GRACE_S", "HEARTBEAT_S", "JOURNAL", "LR_RANGE", "PRUNERS", "SAMPLERS", "DrawSampler", "Job",
           "chosen_trial", "default_study_name", "folder_name", "describe_range", "format_status", "is_lost", "make_pruner",
           "make_sampler", "prepare", "read_space_file", "run_worker", "search", "search_space", "shown_url",
           "stable_hash", "status", "study_status", "tally", "trial_config", "trial_rows",
           "write_trials_csv"]


def prepare(base: TrainConfig, out, *, trials: int = 80, sampler: str = "random", pruner: str = "none",
            workers: int = 1, storage: str | None = None, study_name: str | None = None,
            space_file=None) -> Job:
    """Check every input (names, counts, the space) and build the job. Writes nothing."""
    from ..datasets import entry_for
    from ..methods import method_names
    from ..models import FUSIONS
    entry = entry_for(base.dataset)
    check_choice("method", base.method, method_names(entry.modalities))
    check_choice("fusion", base.fusion, FUSIONS)
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("pruner", pruner, PRUNERS)
    for flag, value in (("--trials", trials), ("--workers", workers)):
        if value < 1:
            raise UserError(f"{flag} must be ≥ 1, got {value}")
    if base.seed < 0:
        raise UserError(f"--seed must be ≥ 0 (it seeds the draws), got {base.seed}")
    base = replace(base, test_split=False).check()  # the search never reads the test split
    overrides = read_space_file(space_file) if space_file else None
    space = search_space(base.method, entry.modalities, overrides, f"--space {space_file}")
    _refuse_fixed(base, space)
    definition = definition_of(base, space, sampler, pruner)
    return Job(base=base.to_dict(), out=str(out), trials=trials, space=space, modalities=tuple(entry.modalities),
               sampler=sampler, pruner=pruner, storage=storage, definition=definition, workers=workers,
               study_name=study_name or default_study_name(base, definition))


def folder_name(config: TrainConfig) -> str:
    """A study's folder inside a search of several methods: "<method>-<fusion>", or
    "unimodal-<modality>" (one modality: the fusion does not matter) — the names `compare` uses."""
    return config.method if is_unimodal(config.method) else f"{config.method}-{config.fusion}"


def _refuse_fixed(base: TrainConfig, space: dict) -> None:
    """A searched parameter set away from its default (`--tau 0.3`) would be silently drawn over."""
    defaults = TrainConfig()
    for name, r in space.items():
        if getattr(base, name) != getattr(defaults, name):
            value = getattr(base, name)
            raise UserError(f"--{name.replace('_', '-')} {value} is searched ({describe_range(r)}); leave it out, "
                            f"or fix it with --space FILE holding: [{name}] choices = [{value}]")


def search(base: TrainConfig, out, *, trials: int = 80, sampler: str = "random", pruner: str = "none",
           workers: int = 1, storage: str | None = None, study_name: str | None = None, space_file=None,
           progress: bool = True, data=None, **timing) -> dict:
    """Run (or continue) the study of `base.method` on `base.dataset` until `trials` draws are
    complete, with `workers` processes, then write trials.csv, best.json and the plots in `out`.
    Returns `study_status` (counts, space, chosen trial). `timing` overrides `Job`'s grace,
    heartbeat and poll seconds."""
    from tqdm.auto import tqdm
    job = replace(prepare(base, out, trials=trials, sampler=sampler, pruner=pruner, workers=workers,
                          storage=storage, study_name=study_name, space_file=space_file), **timing)
    if workers == 1 and data is None:  # a missing dataset stops here, before anything is written
        from ..datasets import load_dataset
        data = load_dataset(job.config.dataset, **job.config.dataset_options)
    elif workers > 1:
        from ..datasets import entry_for
        entry = entry_for(job.config.dataset)
        if not entry.prepared():
            raise UserError(f"dataset {entry.name!r} is not prepared; run: {entry.data_script}")
    study = open_study(job)
    bar = tqdm(total=trials, desc=f"search {base.method}/{base.fusion}", unit="trial",
               **({} if progress else {"disable": True}))

    def show(study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        bar.n = min(len(tally(study.get_trials(deepcopy=False)).finished), trials)
        if complete:
            bar.set_postfix(best=f"{max(t.value for t in complete):.4f}")  # redraws the bar
        else:
            bar.refresh()

    show(study)
    died = []
    try:
        if workers == 1:
            run_worker(job, data, on_trial_end=lambda s: (write_trials_csv(s, out), show(s)))
        else:
            died = _run_workers(job, lambda: show(study))
    finally:
        bar.close()
        write_trials_csv(study, out)  # also after Ctrl-C: the table matches the storage
    write_best(study, out, job)  # from the trials that completed, also when a worker died
    save_plots(study, out)
    if died:
        finished = len(tally(study.get_trials(deepcopy=False)).finished)
        raise UserError(f"search {out}: {'; '.join(died)}; {finished} of {trials} draws are finished and kept "
                        "(trials.csv, best.json and the plots are written from them); run the same command again "
                        "to complete the rest")
    return study_status(study)


def _run_workers(job: Job, show) -> None:
    """Start `job.workers` processes on the study and wait for them (showing progress meanwhile);
    returns a line for each worker that did not end normally (killed, or crashed)."""
    import multiprocessing
    import signal
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
    # A pipe per worker for its one-line error: a Queue's semaphores would make a killed worker's
    # leftovers print a resource-tracker warning at exit.
    pipes = [context.Pipe(duplex=False) for _ in range(job.workers)]
    processes = [context.Process(target=spawned_worker, args=(replace(job, stream=i), sender))
                 for i, (_, sender) in enumerate(pipes)]
    from ..pool import quiet_resource_tracker
    with quiet_resource_tracker():  # a killed worker's locks: no warning at exit after our one line
        for p in processes:
            p.start()
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(min(job.poll, 1.0))
            show()
    except KeyboardInterrupt:  # a terminal's Ctrl-C reached the workers too; else pass it on
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
                p.join(timeout=30)
        raise
    for receiver, _ in pipes:
        if receiver.poll():
            raise UserError(receiver.recv())
    return [_death(i, p) for i, p in enumerate(processes, start=1) if p.exitcode != 0]


def _death(number: int, process) -> str:
    """"worker 2 (pid 4711) was killed by SIGKILL" or "… ended with exit code 1"."""
    import signal
    code = process.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit code {code}"
    return f"worker {number} (pid {process.pid}) {how}"


def status(out=None, storage: str | None = None) -> tuple[str, list[dict]]:
    """(the storage as shown, `study_status` of every study in it): the storage `--storage` names, else
    DIR's journal file. Only reads: nothing is repaired or created, and a storage URL that DIR's
    study.json names is not connected to (a folder you were handed must not open a database or a
    host): it says to pass it as --storage."""
    from ..handed import StudyJson, printable, read_json
    out = Path(out) if out is not None else Path(".")
    if storage is None:
        record = out / "study.json"
        saved = read_json(record, StudyJson)["storage"] if record.exists() or record.is_symlink() else JOURNAL
        if saved != JOURNAL:
            raise UserError(f"{out}'s study is stored in {printable(saved)}: milesbook connects to nothing a file "
                            "names; pass --storage URL (with its password) to read it")
        if not (out / JOURNAL).exists():
            raise UserError(f"{out} holds no search (no {JOURNAL}); run `milesbook search --out {out}` first, "
                            "or give --storage URL")
    opened = open_storage(storage, out, repair=False)  # refuses a link, a non-record line
    if storage is None and (cut := cut_record_bytes(out / JOURNAL)):
        print(f"milesbook: {out / JOURNAL}: its last record was cut off ({cut} bytes, a process killed while "
              f"writing); --status reads past it, and the next `milesbook search --out {out}` removes it "
              "(the trial it was about runs again)", file=sys.stderr)
    names = optuna.get_all_study_names(opened)
    studies = [study_status(optuna.load_study(study_name=n, storage=opened)) for n in names]
    return (str(out / JOURNAL) if storage is None else shown_url(storage)), studies
