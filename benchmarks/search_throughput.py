"""Search throughput: trials per hour of `milesbook search` with 1 worker and with K workers.

On a CPU our small models are compute-bound and a second torch thread speeds one run up only
≈ 1.1×, while two one-thread processes give ≈ 2× the throughput: `--workers 2` should finish the
same trials ≥ 1.6× faster than one worker on a 2-core machine. Each setting runs the same study
(method, seed, draws) into its own temporary folder; run it on an otherwise idle machine.

    python benchmarks/search_throughput.py [--trials 8] [--epochs 4] [--workers 2] [--json out.json]

Exit status 1 when the speed-up is below --target (default 1.6).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import optuna

import milesbook as mb
from milesbook import search


def timed_search(config, trials: int, workers: int, folder: Path) -> float:
    began = time.perf_counter()
    status = search.search(config, folder, trials=trials, workers=workers, progress=False)
    seconds = time.perf_counter() - began
    assert status["counts"]["complete"] == trials, status["counts"]
    return seconds


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
    config = mb.TrainConfig(dataset=args.dataset, method=args.method, epochs=args.epochs, device="cpu")
    mb.load_dataset(args.dataset)  # built once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        one = timed_search(config, args.trials, 1, Path(tmp) / "one")
        many = timed_search(config, args.trials, args.workers, Path(tmp) / "many")
    result = {"dataset": args.dataset, "method": args.method, "trials": args.trials, "epochs": args.epochs,
              "seconds_1_worker": round(one, 1), f"seconds_{args.workers}_workers": round(many, 1),
              "trials_per_hour_1_worker": round(3600 * args.trials / one, 1),
              f"trials_per_hour_{args.workers}_workers": round(3600 * args.trials / many, 1),
              "speedup": round(one / many, 2), "target": args.target}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if result["speedup"] < args.target:
        print(f"speed-up {result['speedup']}× is below the target {args.target}× (was the machine idle?)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
