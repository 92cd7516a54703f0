"""Which draw each trial runs, which trials are lost, and whether a new trial should run — what
lets many workers, on one machine or many, share a study and survive kills.

Draws: a fresh trial takes the next draw; a trial lost to a kill is failed and its draw is queued
again as a *retry* (a WAITING trial with user attrs `draw` and `retry_of`), so the complete trials of
a search are the same draws however often it was interrupted. A draw is complete at most once:
a fresh draw runs only while fewer than `--trials` lower draws are complete or under way
(`verdict`), decided from the trials numbered before it — Optuna numbers trials atomically — so two
workers asking at once never both take the last slot.

Lost trials: a worker writes its identity (host, pid namespace, pid, process start time) and a
heartbeat to its trial. A running trial is lost when its worker is on this machine and its process
is gone (found at once), or when its heartbeat is older than `GRACE_S` (a worker on another machine).
A live trial of another worker is never failed while its process exists or its heartbeat is fresh.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

HEARTBEAT_S = 30.0  # how often a worker stamps its running trial
GRACE_S = 300.0     # a trial of another machine whose stamp is older than this is lost

# Trial attributes. User attrs show in optuna-dashboard; system attrs are the workers' bookkeeping.
DRAW, RETRY_OF, NOTE, FOLDER = "draw", "retry_of", "note", "run_folder"
PROVENANCE = "provenance"  # the trial run's provenance record (`milesbook.provenance`), kept in the storage
WORKER, BEAT = "milesbook_worker", "milesbook_heartbeat"


def draw_of(trial) -> int:
    """The draw a trial runs: set when it starts (a retry inherits its lost trial's); else its number."""
    return int(trial.user_attrs.get(DRAW, trial.number))


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # containers on one host may reuse pids
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks (tells a reused pid apart); None if unknown or a zombie."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields_[0] in "ZX" else fields_[19]


def worker_identity() -> dict:
    """Who runs a trial: enough to tell, on the same machine, whether that process still exists."""
    return {"host": socket.gethostname(), "pidns": _pid_namespace(), "pid": os.getpid(),
            "start": _process_start(os.getpid())}


def is_lost(trial, grace: float = GRACE_S, now: float | None = None) -> bool:
    """Whether a RUNNING trial's worker is gone: its process has ended (same machine), or its last
    heartbeat (else its start) is older than `grace` seconds (another machine)."""
    worker = trial.system_attrs.get(WORKER)
    here = worker_identity()
    if worker and (worker["host"], worker["pidns"]) == (here["host"], here["pidns"]):
        if (worker["pid"], worker["start"]) == (here["pid"], here["start"]):
            return True  # this process's own: a worker runs one trial at a time and asks between trials
        try:
            os.kill(worker["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # exists, another user's
        start = _process_start(worker["pid"])
        return worker["start"] is not None and start != worker["start"]
    beat = trial.system_attrs.get(BEAT) or trial.datetime_start.timestamp()
    return (now or time.time()) - beat > grace


class Heartbeat:
    """Stamps a running trial every `interval` seconds from a thread; `lost` turns True when the
    storage refuses (another worker has failed the trial as lost)."""

    def __init__(self, storage, trial_id: int, interval: float = HEARTBEAT_S):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.lost, self._stop = False, threading.Event()
        storage.set_trial_system_attr(trial_id, WORKER, worker_identity())
        self._beat()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            self.storage.set_trial_system_attr(self.trial_id, BEAT, time.time())
        except UpdateFinishedTrialError:
            self.lost = True
        except Exception:  # a storage hiccup: the next beat tries again
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval) and not self.lost:
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def draw_numbers(trials) -> dict[int, int]:
    """{trial number: its draw}. A fresh trial takes the next draw (its number minus the retries
    before it); a retry runs its lost trial's draw. Fixed when a trial is created, so every worker
    computes the same."""
    draws, retries = {}, 0
    for t in sorted(trials, key=lambda t: t.number):
        if RETRY_OF in t.user_attrs:
            draws[t.number], retries = int(t.user_attrs[DRAW]), retries + 1
        else:
            draws[t.number] = t.number - retries
    return draws


def _duplicates(trials) -> set[int]:
    """Retries made twice for one lost trial (two workers found it at once): all but the first."""
    first = {}
    for t in sorted(trials, key=lambda t: t.number):
        if RETRY_OF in t.user_attrs:
            first.setdefault(t.user_attrs[RETRY_OF], t.number)
    return {t.number for t in trials if RETRY_OF in t.user_attrs and first[t.user_attrs[RETRY_OF]] != t.number}


@dataclass
class Tally:
    """Draws by state: complete, pruned, running (not finished), waiting (a retry queued, not finished).
    A pruned draw is finished: the pruner judged it, and it counts towards `--trials` as in Optuna —
    else a pruner that stops most draws early would make the search run more of them, not fewer."""
    draws: dict[int, int]
    complete: set[int] = field(default_factory=set)
    pruned: set[int] = field(default_factory=set)
    running: set[int] = field(default_factory=set)
    waiting: set[int] = field(default_factory=set)

    @property
    def finished(self) -> set[int]:
        return self.complete | self.pruned

    def claimed_below(self, draw: int) -> int:
        """Draws under `draw` that are finished or under way (running, or queued to run again)."""
        return len({d for d in self.finished | self.running | self.waiting if d < draw})


def tally(trials) -> Tally:
    """Who holds which draw, from all trials of a study."""
    result = Tally(draw_numbers(trials))
    skip = _duplicates(trials)
    for t in trials:
        d = result.draws[t.number]
        if t.number in skip:
            continue
        {TrialState.COMPLETE: result.complete, TrialState.PRUNED: result.pruned, TrialState.RUNNING: result.running,
         TrialState.WAITING: result.waiting}.get(t.state, set()).add(d)
    result.running -= result.finished
    result.waiting -= result.finished | result.running
    return result


def give_back(study, trial, note: str) -> None:
    """Fail a trial that did not finish (lost, interrupted, crashed) and queue its draw to run again.
    The retry is queued first, so the draw is never unclaimed in between."""
    trials = study.get_trials(deepcopy=False)
    draw = draw_numbers(trials)[trial.number]
    if not any(t.user_attrs.get(RETRY_OF) == trial.number for t in trials):
        study.enqueue_trial({}, user_attrs={DRAW: draw, RETRY_OF: trial.number})
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, NOTE, note)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        pass  # another worker got there first, or the trial did finish


def recover(study, trials, grace: float = GRACE_S) -> bool:
    """Give back every running trial whose worker is gone; True if there was one."""
    lost = [t for t in trials if t.state == TrialState.RUNNING and is_lost(t, grace)]
    for t in lost:
        give_back(study, t, "lost: its worker stopped (killed?) — the draw runs again as a new trial")
    return bool(lost)


def verdict(study, trial, trials_asked: int) -> str:
    """"" when `trial` (just asked for) should run, else why not: a fresh draw beyond what `--trials`
    needs (finished — complete or pruned — or under way), a retry made twice, or a retry of a draw that completed after all. Decided from trials
    numbered before it, so two workers asking at once never both take the last slot."""
    trials = study.get_trials(deepcopy=False)
    t = tally(trials)
    draw = t.draws[trial.number]
    if RETRY_OF not in trial.user_attrs:
        if t.claimed_below(draw) >= trials_asked:
            return f"not run: {trials_asked} lower draws were already complete or running"
        return ""
    if trial.number in _duplicates(trials):
        return "not run: a second retry of the same lost trial"
    source = next(s for s in trials if s.number == trial.user_attrs[RETRY_OF])
    if source.state == TrialState.RUNNING:  # queued as lost by a worker that has not failed it yet
        give_back(study, source, "lost: its worker stopped (killed?) — the draw runs again as a new trial")
        source = study._storage.get_trial(source._trial_id)
    if source.state in (TrialState.COMPLETE, TrialState.PRUNED) or draw in tally(study.get_trials()).finished:
        return f"not run: draw {draw} finished in trial {source.number} after all"
    return ""
