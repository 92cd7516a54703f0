"""Search throughput: trials per hour of `milesbook search` with 1 worker and with K workers.

On a CPU our small models are compute-bound: K one-thread processes should give up to K× the
throughput of one K-thread process, less what the extra threads already buy that one process. The
issue's aim was ≥ 1.6× with 2 workers on the 2-core machine, on the premise that a second thread
speeds one run up only ≈ 1.1×. So the benchmark also measures the premise on K plain runs
(`--epochs` each, no search): the training seconds of a run alone with all threads and of a run
among K one-thread processes side by side (`pool.run_many`, start-up excluded). Their ratio times K
is the most K workers can gain (the ceiling); the search's speed-up is reported as a share of it.
Each setting runs the same study (method, seed, draws) into its own temporary folder; run it on an
otherwise idle machine.

    python benchmarks/search_throughput.py [--trials 8] [--epochs 4] [--workers 2] [--json out.json]

Exit status 1 when the speed-up is below --target (default 1.6).
"""
import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import optuna

import milesbook as mb
from milesbook import search
from milesbook.pool import run_many


def timed_search(config, trials: int, workers: int, folder: Path) -> float:
    began = time.perf_counter()
    status = search.search(config, folder, trials=trials, workers=workers, progress=False)
    seconds = time.perf_counter() - began
    assert status["counts"]["complete"] == trials, status["counts"]
    return seconds


def run_seconds(config, runs: int, workers: int, folder: Path) -> float:
    """Mean training seconds of one run (start-up excluded) when `runs` seeds of `config` train with
    `workers` processes side by side (each run with `config.threads` torch threads)."""
    jobs = [(dataclasses.replace(config, seed=seed), folder / str(seed)) for seed in range(runs)]
    summaries = run_many(jobs, workers=workers, progress=False)
    return sum(s["train_seconds"] for s in summaries) / len(summaries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits-av")
    parser.add_argument("--method", default="miles")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--target", type=float, default=1.6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = mb.TrainConfig(dataset=args.dataset, method=args.method, epochs=args.epochs, device="cpu", threads=1)
    mb.load_dataset(args.dataset)  # built once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        # one process with all the threads, against K one-thread processes (threads are a run setting)
        every_thread = dataclasses.replace(config, threads=args.workers)
        one = timed_search(every_thread, args.trials, 1, Path(tmp) / "one")
        many = timed_search(config, args.trials, args.workers, Path(tmp) / "many")
        alone = run_seconds(every_thread, args.workers, 1, Path(tmp) / "runs-alone")
        side_by_side = run_seconds(config, args.workers, args.workers, Path(tmp) / "runs-side-by-side")
    result = {"dataset": args.dataset, "method": args.method, "trials": args.trials, "epochs": args.epochs,
              "seconds_1_worker": round(one, 1), f"seconds_{args.workers}_workers": round(many, 1),
              "trials_per_hour_1_worker": round(3600 * args.trials / one, 1),
              f"trials_per_hour_{args.workers}_workers": round(3600 * args.trials / many, 1),
              "speedup": round(one / many, 2), "target": args.target,
              "seconds_per_run_alone": round(alone, 1),
              f"seconds_per_run_{args.workers}_side_by_side": round(side_by_side, 1),
              "ceiling": round(args.workers * alone / side_by_side, 2)}
    result["share_of_ceiling"] = round(result["speedup"] / result["ceiling"], 2)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if result["speedup"] < args.target:
        print(f"speed-up {result['speedup']}× is below the target {args.target}×; plain runs in "
              f"{args.workers} one-thread processes allow {result['ceiling']}× here (was the machine idle?)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
