"""Per-epoch cost of each method against vanilla on the CPU.

MILES reads utilization from the validation pass that every method runs anyway, so its only extra
work per epoch is a few float operations and setting two learning rates. This measures the `seconds`
column of history.csv (the method's own work + train pass + validation pass) for each method,
interleaving the methods across repeats so that drift of the machine hits them alike. The median
epoch is the steady cost; the mean includes occasional work such as G-Blend's estimation epochs,
whose count is reported too.

    python benchmarks/cpu_epoch.py [--methods all] [--epochs 8] [--repeats 3] [--json out.json]
"""
import argparse
import json
import statistics
import tempfile
from pathlib import Path


import milesbook as mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits-av")
    parser.add_argument("--methods", default="vanilla,aux,miles", help="comma-separated, or all")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (a run setting)")
    args = parser.parse_args()
    from milesbook.comparison import expand_methods
    methods = expand_methods(args.methods.split(","))
    data = mb.load_dataset(args.dataset)
    extra = {m: 0 for m in methods}
    seconds = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for method in methods:
                config = mb.TrainConfig(dataset=args.dataset, method=method, epochs=args.epochs, seed=repeat,
                                        device="cpu", threads=args.threads, mslr_lrs={m: 1e-3 for m in data.modalities},
                                        gblend_every=max(2, args.epochs // 3))
                out = Path(tmp) / f"{method}-{repeat}"
                mb.train(config, out, dataset=data, progress=False)
                rows = mb.read_history(out)
                seconds[method] += [row["seconds"] for row in rows[1:]]  # the first epoch warms up
                extra[method] = int(rows[-1].get("gblend_extra_epochs", 0))
    median = {m: statistics.median(v) for m, v in seconds.items()}
    mean = {m: statistics.fmean(v) for m, v in seconds.items()}
    result = {"dataset": args.dataset, "threads": args.threads, "epochs_per_run": args.epochs,
              "epochs_timed": len(seconds[methods[0]]), "median_seconds_per_epoch": median,
              "mean_seconds_per_epoch": mean, "extra_epochs_per_run": extra,
              "ratio_to_vanilla": {m: median[m] / median["vanilla"] for m in methods if "vanilla" in median},
              "mean_ratio_to_vanilla": {m: mean[m] / mean["vanilla"] for m in methods if "vanilla" in mean}}
    if "aux" in median and "miles" in median:
        result["miles_over_aux"] = median["miles"] / median["aux"]
    print(f"{'method':10s} {'median s/epoch':>15s} {'× vanilla':>10s} {'mean s/epoch':>13s} {'× vanilla':>10s} "
          f"{'extra epochs':>13s}")
    for m in methods:
        print(f"{m:10s} {median[m]:15.3f} {result['ratio_to_vanilla'].get(m, float('nan')):10.3f} {mean[m]:13.3f} "
              f"{result['mean_ratio_to_vanilla'].get(m, float('nan')):10.3f} {extra[m]:13d}")
    if "miles_over_aux" in result:
        print(f"miles / aux (the scheduler alone): {result['miles_over_aux']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
