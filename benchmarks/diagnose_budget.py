"""The diagnose budget: 3 seeds of the default `milesbook diagnose` on 3,000 samples of two small
modalities, from the user's side — a folder written with numpy — on a 2-core CPU (target: < 3 min).

The folder holds digits-av's arrays (3,000 pairs: 8×8 images, 39×13 MFCCs) as a user would save
them: `image.npy`, `audio.npy`, `labels.npy` and `split.npy` (its own split). The command is
`milesbook diagnose --dataset FOLDER --seeds 3 --workers 2 --out <empty folder>`, run as its own
process; its wall time is `wall_s`.

    python benchmarks/diagnose_budget.py [--workers 2] [--json benchmarks/diagnose.json]

Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import milesbook as mb


def write_folder(folder: Path) -> int:
    """digits-av's splits as one folder of .npy files; returns the number of samples."""
    data = mb.load_dataset("digits-av")
    folder.mkdir(parents=True)
    arrays = {m: np.concatenate([data.splits[s].inputs[m].numpy() for s in ("train", "val", "test")])
              for m in data.modalities}
    arrays["labels"] = np.concatenate([data.splits[s].labels.numpy() for s in ("train", "val", "test")])
    arrays["split"] = np.concatenate([np.full(len(data.splits[s]), k) for k, s in enumerate(("train", "val", "test"))])
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    return len(arrays["labels"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mydata"
        samples = write_folder(folder)
        command = [sys.executable, "-m", "milesbook", "diagnose", "--dataset", str(folder), "--seeds", "3",
                   "--workers", str(args.workers), "--out", str(Path(tmp) / "diagnose")]
        began = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - began
        diagnosis = json.loads((Path(tmp) / "diagnose" / "diagnosis.json").read_text())
    result = {"command": f"milesbook diagnose --dataset <folder of {samples} samples> --seeds 3 --workers {args.workers}",
              "samples": samples, "wall_s": wall, "target_s": 180, "verdict": diagnosis["verdict"],
              "made_under": diagnosis["made_under"], "cpu_count": os.cpu_count(), "load_average_before": load}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
