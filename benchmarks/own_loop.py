"""Seconds per epoch of balancing in your own loop and under Lightning, against milesbook's Trainer.

The same model (milesbook's small image + audio joint-fusion model), data (digits-av), method (MILES),
batch size (64), threads (1) and device (CPU) in the three paths:
- Trainer: history.csv's `seconds` (train pass, validation, and with `--no-test` no test pass; its
  checkpoint and candidate files included);
- plain loop: `milesbook.Balancer` around the loop of docs/examples/plain_loop.py (train pass and
  `end_epoch`'s validation readings);
- Lightning: docs/examples/lightning_loop.py's module and `BalancingCallback`, one process (train pass,
  the module's `validation_step` and the callback's readings pass), timed from epoch start to the
  callback's decision.
The paths are interleaved across repeats so that drift of the machine hits them alike; the median
epoch (all epochs but the first, which pays warm-up) is the steady cost.

    python benchmarks/own_loop.py [--epochs 6] [--repeats 3] [--json docs/benchmarks/own_loop.json]
"""
import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import milesbook as mb

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def example(name: str):
    if str(EXAMPLES) not in sys.path:  # lightning_loop imports plain_loop, beside it
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainer_epochs(epochs: int, seed: int) -> tuple[list[float], list[dict]]:
    with tempfile.TemporaryDirectory() as out:
        mb.train(mb.TrainConfig(method="miles", epochs=epochs, seed=seed, threads=1, device="cpu", test_split=False),
                 out, progress=False)
        return [row["seconds"] for row in mb.read_history(out)], []


def plain_epochs(epochs: int, seed: int) -> list[float]:
    plain = example("plain_loop")
    data = mb.load_dataset("digits-av")
    torch.manual_seed(seed)
    model = mb.build_model(data.shapes, data.num_classes)
    optimizer = torch.optim.Adam(model.param_groups(1e-3))
    generator = torch.Generator().manual_seed(seed)
    train = plain.Rows(data.splits["train"])
    train_loader = torch.utils.data.DataLoader(train, batch_size=64, sampler=plain.OneShufflePerEpoch(len(train), generator),
                                               collate_fn=plain.as_is)
    val_loader = torch.utils.data.DataLoader(plain.Rows(data.splits["val"]), batch_size=1000, collate_fn=plain.as_is)
    balancer = mb.Balancer(model, optimizer, "miles", train_loader=train_loader, seed=seed)
    seconds, parts = [], []
    for _ in range(epochs):
        began = time.perf_counter()
        model.train()
        for inputs, labels in train_loader:
            inputs = {m: x + std * torch.randn(x.shape, generator=generator) if (std := data.train_noise_std[m]) else x
                      for m, x in inputs.items()}
            loss = balancer.loss(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            balancer.after_backward()
            optimizer.step()
            balancer.after_step()
        trained = time.perf_counter()
        balancer.end_epoch(val_loader)
        seconds.append(time.perf_counter() - began)
        parts.append({"train": trained - began, "validation": seconds[-1] - (trained - began)})
    return seconds, parts


def lightning_epochs(epochs: int, seed: int) -> list[float]:
    import lightning.pytorch as L
    from milesbook.lightning import BalancingCallback
    lightning_loop = example("lightning_loop")

    class EpochClock(L.Callback):
        def __init__(self):
            self.seconds, self.parts = [], []
        def on_train_epoch_start(self, trainer, pl_module):
            self.began = time.perf_counter()
        def on_validation_epoch_start(self, trainer, pl_module):
            self.validating = time.perf_counter()
        def on_validation_epoch_end(self, trainer, pl_module):  # after the balancing callback (listed first)
            if not trainer.sanity_checking:
                now = time.perf_counter()
                self.seconds.append(now - self.began)
                self.parts.append({"train": self.validating - self.began, "validation": now - self.validating,
                                   "readings pass": balancing.reading_seconds})

    class TimedBalancing(BalancingCallback):
        def on_validation_epoch_end(self, trainer, pl_module):
            began = time.perf_counter()
            super().on_validation_epoch_end(trainer, pl_module)
            self.reading_seconds = time.perf_counter() - began

    L.seed_everything(seed, verbose=False)
    data = mb.load_dataset("digits-av")
    module = lightning_loop.FusionModule(data, 1e-3, seed)
    module.on_validation_epoch_end = lambda: None  # no printing
    clock = EpochClock()
    balancing = TimedBalancing("miles", num_classes=data.num_classes, seed=seed, model="net")
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[balancing, clock],
                        default_root_dir=tempfile.mkdtemp(prefix="milesbook-bench-"))
    loader = torch.utils.data.DataLoader
    trainer.fit(module, loader(lightning_loop.Rows(data.splits["train"]), batch_size=64, shuffle=True,
                               collate_fn=lightning_loop.as_is),
                loader(lightning_loop.Rows(data.splits["val"]), batch_size=1000, collate_fn=lightning_loop.as_is))
    return clock.seconds, clock.parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    paths = {"trainer": trainer_epochs, "plain loop": plain_epochs, "lightning": lightning_epochs}
    seconds = {name: [] for name in paths}
    parts = {name: [] for name in paths}
    for repeat in range(args.repeats):
        for name, run in paths.items():
            epoch_seconds, epoch_parts = run(args.epochs, repeat)
            seconds[name] += epoch_seconds[1:]
            parts[name] += epoch_parts[1:]
    median = {name: statistics.median(values) for name, values in seconds.items()}
    breakdown = {name: {key: round(statistics.median(p[key] for p in found), 4) for key in found[0]}
                 for name, found in parts.items() if found}
    reasons = {}
    for name in ("plain loop", "lightning"):
        if median[name] > 1.05 * median["trainer"]:
            b = breakdown[name]
            reasons[name] = (f"train pass {b['train']:.3f} s against the plain loop's {breakdown['plain loop']['train']:.3f} s"
                             f" (Lightning's per-step hooks and closure); validation {b['validation']:.3f} s"
                             + (f", of which the callback's readings pass {b['readings pass']:.3f} s (a second pass "
                                "over the validation split beside validation_step)" if "readings pass" in b else ""))
    result = {
        "what": "seconds per epoch, MILES on digits-av, batch 64, 1 thread, CPU; median of all epochs but the first",
        "command": f"python benchmarks/own_loop.py --epochs {args.epochs} --repeats {args.repeats}",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "milesbook": mb.__version__},
        "median_seconds_per_epoch": {k: round(v, 4) for k, v in median.items()},
        "relative_to_trainer": {k: round(v / median["trainer"], 3) for k, v in median.items()},
        "median_parts_of_an_epoch": breakdown,
        "over_5_percent_because": reasons,
        "epochs_measured": {k: len(v) for k, v in seconds.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
