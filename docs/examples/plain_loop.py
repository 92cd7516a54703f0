"""MILES (or another balancing method) inside a plain PyTorch training loop of your own.

    python docs/examples/plain_loop.py --method miles --epochs 5 --tau 0.05 --mu 0.5

Trains a small image + audio model on digits-av (embedded: no download) with your loop and prints one
JSON line per epoch: the utilization rates u, their gap δ, and the learning rate each param group
trained with during that epoch. The five lines that balance are marked `# balancing`.

The data order and the training noise follow milesbook's Trainer (one shuffle per epoch and the
noise drawn from one seeded generator), so with the same seed and threads this loop's history equals
`milesbook train`'s bit for bit (tests/test_own_loop.py checks it).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import milesbook


class Rows(Dataset):
    """One split as ({modality: tensor}, label) rows."""

    def __init__(self, split):
        self.inputs, self.labels = split.inputs, split.labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {m: x[i] for m, x in self.inputs.items()}, self.labels[i]

    def __getitems__(self, rows):
        # A whole batch in one indexing (DataLoader uses it when present), not 64 rows stacked one by one.
        index = torch.tensor(rows)
        return {m: x[index] for m, x in self.inputs.items()}, self.labels[index]


def as_is(batch):
    """The collate function for a dataset whose `__getitems__` already returns the batch."""
    return batch


class OneShufflePerEpoch(Sampler):
    """A fresh permutation from `generator` each epoch, and nothing else drawn from it (torch's
    RandomSampler draws one more permutation after each epoch, which the Trainer does not)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def arguments(argv=None, description: str = __doc__, extra=()):
    """The examples' flags; `extra`: (flag, options) pairs a caller adds (the Lightning example's)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("--method", default="miles")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=0.2)
    parser.add_argument("--mu", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (they change the last bits)")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    data = milesbook.load_dataset("digits-av")
    torch.manual_seed(args.seed)
    model = milesbook.build_model(data.shapes, data.num_classes)       # any model whose forward returns FusionOutput
    optimizer = torch.optim.Adam(model.param_groups(args.lr))          # groups named "fusion", "image", "audio"
    generator = torch.Generator().manual_seed(args.seed)               # batch order and training noise
    train = Rows(data.splits["train"])
    train_loader = DataLoader(train, batch_size=64, sampler=OneShufflePerEpoch(len(train), generator),
                              collate_fn=as_is)
    val_loader = DataLoader(Rows(data.splits["val"]), batch_size=1000, collate_fn=as_is)
    knobs = {"tau": args.tau, "mu": args.mu} if args.method in ("miles", "miles-lab") else {}
    balancer = milesbook.Balancer(model, optimizer, method=args.method, train_loader=train_loader,  # balancing
                                  seed=args.seed, **knobs)
    printed = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        for inputs, labels in train_loader:
            # digits-av's audio is trained with Gaussian noise (std per modality, 0 for the images)
            inputs = {m: x + std * torch.randn(x.shape, generator=generator) if (std := data.train_noise_std[m]) else x
                      for m, x in inputs.items()}
            loss = balancer.loss(model(inputs), labels)                # balancing: the method's loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            balancer.after_backward()                                  # balancing: gradient edits
            optimizer.step()
            balancer.after_step()                                      # balancing
        readings = balancer.end_epoch(val_loader)                      # balancing: u, δ, next rates
        line = {"epoch": epoch, "rank": 0, "u": readings.utilization, "delta": readings.delta,
                "lr": {k.removeprefix("lr_"): v for k, v in balancer.history[-1].items() if k.startswith("lr_")}}
        sys.stdout.write(json.dumps(line) + "\n")  # one write: lines of several processes do not interleave
        sys.stdout.flush()
        printed.append(line)
        if balancer.should_stop:
            break
    return printed


if __name__ == "__main__":
    try:
        main()
    except milesbook.errors.UserError as error:  # a method this loop cannot run: one line, not a traceback
        raise SystemExit(f"plain_loop.py: {error}")
