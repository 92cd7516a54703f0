"""Per-epoch cost of MILES against vanilla and aux on the CPU (issue: MILES adds no measurable cost).

MILES reads utilization from the validation pass that every method runs anyway, so its only extra
work per epoch is a few float operations and setting two learning rates. This measures the `seconds`
column of history.csv (train pass + validation pass + the method's end-of-epoch rule) for each method,
interleaving the methods across repeats so that drift of the machine hits them alike.

    python benchmarks/cpu_epoch.py [--epochs 8] [--repeats 3] [--json out.json]
"""
import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

import milesbook as mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits-av")
    parser.add_argument("--methods", default="vanilla,aux,miles")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    methods = args.methods.split(",")
    data = mb.load_dataset(args.dataset)
    seconds = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in methods:
                config = mb.TrainConfig(dataset=args.dataset, method=method, epochs=args.epochs, seed=repeat,
                                        device="cpu")
                out = Path(tmp) / f"{method}-{repeat}"
                mb.train(config, out, dataset=data, progress=False)
                seconds[method] += [row["seconds"] for row in mb.read_history(out)[1:]]  # first epoch warms up
    median = {m: statistics.median(v) for m, v in seconds.items()}
    result = {"dataset": args.dataset, "threads": torch.get_num_threads(), "epochs_timed": len(seconds[methods[0]]),
              "median_seconds_per_epoch": median,
              "ratio_to_vanilla": {m: median[m] / median["vanilla"] for m in methods if "vanilla" in median}}
    if "aux" in median and "miles" in median:
        result["miles_over_aux"] = median["miles"] / median["aux"]
    print(f"{'method':10s} {'s/epoch':>8s} {'× vanilla':>10s}")
    for m in methods:
        print(f"{m:10s} {median[m]:8.3f} {result['ratio_to_vanilla'].get(m, float('nan')):10.3f}")
    if "miles_over_aux" in result:
        print(f"miles / aux (the scheduler alone): {result['miles_over_aux']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
