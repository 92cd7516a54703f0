"""MILES (or another balancing method) in a PyTorch Lightning training, on one or several processes.

    python docs/examples/lightning_loop.py --method miles --epochs 5 --tau 0.05
    python docs/examples/lightning_loop.py --devices 2 --strategy ddp     # two CPU processes (gloo)

Trains a small image + audio model on digits-av (embedded: no download) and prints one JSON line per
epoch and process: the utilization rates u, their gap δ, and the learning rate each param group
trained with during that epoch. Under DDP every rank reads the same u and takes the same decision
(the counts behind u are summed over the ranks). The lines that balance are marked `# balancing`.
"""
from __future__ import annotations

import json
import sys
import tempfile
import warnings

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader

import milesbook
from milesbook.lightning import BalancingCallback
from plain_loop import Rows, arguments, as_is  # beside this file: the split as batches, the flags


class FusionModule(L.LightningModule):
    """milesbook's small joint-fusion model as a LightningModule; its forward returns a FusionOutput."""

    def __init__(self, data, lr: float, seed: int):
        super().__init__()
        self.net = milesbook.build_model(data.shapes, data.num_classes)
        self.lr, self.noise = lr, data.train_noise_std
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, inputs):
        return self.net(inputs)

    def training_step(self, batch, index):
        inputs, labels = batch
        # digits-av's audio is trained with Gaussian noise (std per modality, 0 for the images)
        inputs = {m: x + std * torch.randn(x.shape, generator=self.generator).to(x.device)
                  if (std := self.noise[m]) else x for m, x in inputs.items()}
        return self.balancing.loss(self(inputs), labels)          # balancing: the method's loss

    def validation_step(self, batch, index):
        inputs, labels = batch
        accuracy = (self(inputs).fusion.argmax(1) == labels).float().mean()
        self.log("val_acc", accuracy, sync_dist=True)

    def on_validation_epoch_end(self):
        # Lightning calls the callbacks' hook first: the balancing decision for this epoch is made.
        if self.trainer.sanity_checking:
            return
        balancer = self.balancing.balancer
        row = balancer.history[-1]
        line = {"epoch": row["epoch"], "rank": self.global_rank, "u": balancer.last_readings.utilization,
                "delta": row["delta"], "lr": {k.removeprefix("lr_"): v for k, v in row.items() if k.startswith("lr_")}}
        sys.stdout.write(json.dumps(line) + "\n")  # one write: lines of several processes do not interleave
        sys.stdout.flush()

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.param_groups(self.lr))   # balancing: groups named fusion, image, audio


def main(argv=None) -> None:
    args = arguments(argv, __doc__, [("--devices", {"type": int, "default": 1, "help": "processes (CPU: gloo)"}),
                                      ("--strategy", {"default": "auto", "help": "auto, or ddp for several processes"})])
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # the data are in memory
    L.seed_everything(args.seed, verbose=False)
    data = milesbook.load_dataset("digits-av")
    module = FusionModule(data, args.lr, args.seed)
    knobs = {"tau": args.tau, "mu": args.mu} if args.method in ("miles", "miles-lab") else {}
    balancing = BalancingCallback(args.method, num_classes=data.num_classes, seed=args.seed, model="net",  # balancing
                                  **knobs)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices, strategy=args.strategy,
                        callbacks=[balancing], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tempfile.mkdtemp(prefix="milesbook-lightning-"))
    trainer.fit(module, DataLoader(Rows(data.splits["train"]), batch_size=64, shuffle=True, collate_fn=as_is),
                DataLoader(Rows(data.splits["val"]), batch_size=1000, collate_fn=as_is))
    if torch.distributed.is_initialized():  # gloo's threads end before the interpreter does, not abort at exit
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except milesbook.errors.UserError as error:  # a method this setting cannot run: one line, not a traceback
        raise SystemExit(f"lightning_loop.py: {error}")
