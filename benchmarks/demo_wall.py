"""The main job's wall time: `make demo`'s command from an empty output folder, and where it goes.

Runs `milesbook compare --dataset digits-av --seeds 3 --workers 2 --out <empty folder>` (the
Makefile's demo, venv present) as its own process and reports its wall time (`wall_s`), then reads
every run it trained: the epochs' own `seconds` (training, evaluation and the epoch's file writes),
summed, and per worker. What is left of the wall time is the start-up of the command and its worker
processes, loading data, and the report and figures. It also checks that the numbers equal the
committed demo's (docs/demo/results.csv: the same rows and seeds).

    python benchmarks/demo_wall.py [--workers 2] [--json benchmarks/demo.json]

Run it on an otherwise idle machine.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        command = [sys.executable, "-m", "milesbook", "compare", "--dataset", "digits-av", "--seeds", "3",
                   "--workers", str(args.workers), "--out", str(out)]
        began = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - began
        runs = sorted(p.parent for p in out.rglob("history.csv"))
        epoch_seconds = [sum(float(r["seconds"]) for r in read_csv(run / "history.csv")) for run in runs]
        results = read_csv(out / "results.csv")
        made_under = json.loads((out / "report.json").read_text())["made_under"]
    committed = read_csv(ROOT / "docs" / "demo" / "results.csv")
    result = {"command": " ".join(["milesbook", *command[3:-1], "<empty folder>"]), "wall_s": wall,
              "runs": len(runs), "epochs_seconds_sum": sum(epoch_seconds),
              "epochs_seconds_per_worker": sum(epoch_seconds) / args.workers,
              "rest_s": wall - sum(epoch_seconds) / args.workers,
              "same_numbers_as_docs_demo": results == committed, "made_under": made_under,
              "cpu_count": os.cpu_count(), "load_average_before": load}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
