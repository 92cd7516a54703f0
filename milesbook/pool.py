"""Many runs at once: `run_many` trains (or reuses) a list of runs in K worker processes.

On CPU, K one-thread processes beat one K-thread process (the search measured ≈ 1.33× for two on a
2-core machine), and a run's numbers depend on its thread count, never on how many runs share the
machine: each run trains with its own `TrainConfig.threads`, whatever K is — so `--workers 2` gives
the same numbers as `--workers 1`, only sooner.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .config import TrainConfig
from .errors import UserError
from .train import run_or_reuse

_DATA = {}  # per worker process: each dataset loaded once


def _run_job(job: tuple[dict, str]) -> dict:
    from .datasets import load_dataset
    config = TrainConfig.from_dict(job[0])
    key = json.dumps([config.dataset, config.dataset_options], sort_keys=True)
    if key not in _DATA:
        _DATA[key] = load_dataset(config.dataset, **config.dataset_options)
    return run_or_reuse(config, job[1], _DATA[key], progress=False)


@contextlib.contextmanager
def quiet_resource_tracker():
    """Start worker processes inside this: a worker that dies (killed, or ending with the pool) leaves its
    locks to multiprocessing's resource tracker, which cleans them up and warns at exit — noise after
    the lines that say what happened. The tracker and the workers inherit the filter from here."""
    quiet = "ignore:resource_tracker:UserWarning"
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = f"{before},{quiet}" if before else quiet
    try:
        yield
    finally:
        os.environ.pop("PYTHONWARNINGS") if before is None else os.environ.update(PYTHONWARNINGS=before)


def run_many(jobs: list[tuple[TrainConfig, Path]], workers: int = 1, data=None, progress: bool = True,
             encoders: dict | None = None) -> list[dict]:
    """The summary of each (config, folder) job, trained or reused (`run_or_reuse`), in job order.
    With `workers` > 1, that many fresh processes (spawned: no forked torch state), each training one
    run at a time with the run's own `threads`; `data` (used with one worker) saves loading the
    dataset again when the caller has it. Data or `encoders` given in memory train in this process."""
    from tqdm.auto import tqdm
    if workers > 1 and (encoders or getattr(data, "origin", "") == "in memory"):
        raise UserError("data or encoders given in memory train in this process: use workers=1 (or save the "
                        "data as a folder and give the encoders as package.module:factory)")
    bar = tqdm(total=len(jobs), desc="runs", unit="run", **({} if progress else {"disable": True}))
    results = []
    if workers <= 1:
        for config, folder in jobs:
            bar.set_postfix_str(f"{config.method} {config.fusion} seed {config.seed}")
            results.append(run_or_reuse(config, folder, data, progress=False, encoders=encoders))
            bar.update()
    else:
        import multiprocessing
        context = multiprocessing.get_context("spawn")
        with quiet_resource_tracker():
            pool = context.Pool(workers)
        with pool:
            for summary in pool.imap(_run_job, [(c.to_dict(), str(f)) for c, f in jobs]):
                results.append(summary)
                bar.update()
    bar.close()
    return results
