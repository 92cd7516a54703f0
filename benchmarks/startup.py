"""Start-up: how long `milesbook train` takes before its first epoch, and where that time goes.

A one-epoch `milesbook train --method vanilla` on digits-av is run `--repeats` times as its own
process (the CLI a user types); its wall time minus the epoch's own `seconds` (history.csv: training,
evaluation and the epoch's writes) is the time before (and around) the epoch. A second process times
the phases of the same work in order — interpreter, `import torch`, `import milesbook`, loading the
(cached) dataset, building the trainer (model, optimizer, method) — so the total can be read.

    python benchmarks/startup.py [--repeats 5] [--json benchmarks/startup.json] [--checkout DIR]

`--checkout DIR` times another source checkout of the package (e.g. an older commit's clone), for
a before/after figure. Run it on an otherwise idle machine, with the dataset already cached.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = r"""
import json, time
began = time.perf_counter()
import torch
torch_done = time.perf_counter()
import milesbook as mb
package_done = time.perf_counter()
data = mb.load_dataset("digits-av")
data_done = time.perf_counter()
from milesbook.train import Trainer
Trainer(mb.TrainConfig(method="vanilla", epochs=1, device="cpu"), "{out}", data, progress=False)
trainer_done = time.perf_counter()
import sys
print(json.dumps({{"import_torch_s": torch_done - began, "import_milesbook_s": package_done - torch_done,
                  "load_dataset_s": data_done - package_done, "build_trainer_s": trainer_done - data_done,
                  "imports_sklearn": "sklearn" in sys.modules, "imports_matplotlib": "matplotlib" in sys.modules,
                  "imports_torch_dynamo": "torch._dynamo" in sys.modules}}))
"""


ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], env: dict, cwd: str) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--checkout", type=Path, default=None, help="time this source checkout instead")
    args = parser.parse_args()
    # The checkout first on the path, and run from a neutral folder: Python puts the working directory
    # before PYTHONPATH, so running from a clone would time that clone whatever --checkout says.
    checkout = (args.checkout or ROOT).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(checkout)}
    python = sys.executable
    walls, epochs, phases = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        interpreter = statistics.median(timed([python, "-c", "pass"], env, tmp) for _ in range(args.repeats))
        for k in range(args.repeats):
            out = Path(tmp) / f"run{k}"
            walls.append(timed([python, "-m", "milesbook", "train", "--method", "vanilla", "--epochs", "1",
                                "--device", "cpu", "--out", str(out)], env, tmp))
            epochs.append(float(next(iter(_history(out)))["seconds"]))
            code = PHASES.format(out=Path(tmp) / f"phases{k}")
            phases.append(json.loads(subprocess.run([python, "-c", code], check=True, env=env, cwd=tmp,
                                                    capture_output=True, text=True).stdout))
    before = [w - e for w, e in zip(walls, epochs)]
    result = {"checkout": str(checkout), "repeats": args.repeats,
              "command": "milesbook train --method vanilla --epochs 1 --device cpu (digits-av, cached)",
              "wall_s": statistics.median(walls), "epoch_s": statistics.median(epochs),
              "before_first_epoch_s": statistics.median(before), "interpreter_s": interpreter,
              "phases_median_s": {k: statistics.median(p[k] for p in phases) for k in phases[0] if k.endswith("_s")},
              "imports": {k: phases[0][k] for k in phases[0] if k.startswith("imports_")},
              "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()[0]}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def _history(folder: Path):
    import csv
    with open(folder / "history.csv") as f:
        yield from csv.DictReader(f)


if __name__ == "__main__":
    main()
