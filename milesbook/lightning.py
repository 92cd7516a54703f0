"""MILES and the balancing methods as a PyTorch Lightning callback (`pip install milesbook[lightning]`).

    balancing = BalancingCallback("miles", tau=0.2, mu=0.5, num_classes=10)
    trainer = L.Trainer(callbacks=[balancing], ...)

    class Model(L.LightningModule):           # forward returns a FusionOutput (docs/own-loop.md)
        def training_step(self, batch, index):
            inputs, labels = batch
            return self.balancing.loss(self(inputs), labels)   # the method's loss (Eq. 3 for MILES)
        def configure_optimizers(self):                         # groups named "fusion" and per modality
            return torch.optim.Adam(self.net.param_groups(1e-3))

The callback attaches itself to the module as `module.balancing` when training starts. It uses
Lightning's hooks: `on_before_optimizer_step` (after backward and gradient unscaling) for gradient
edits, `on_train_batch_end` after the step, and `on_validation_epoch_end` for the epoch's rule: it
reads the model on the validation loader (a second pass beside your `validation_step`) and applies
the method (MILES sets the next epoch's rates). Without a validation loop nothing is balanced.

Under distributed data parallel every process reads its share of the validation split and the
counts are summed over all processes before any rate is computed (`milesbook.readings`), so every
rank takes the same decision. Methods that edit gradients from their own batch each step (OGM, OGM-GE,
MMPareto, MLA, InfoReg, AIM-R) are refused with more than one process: each rank would edit the
averaged gradient with its own batch's statistics and the ranks' weights would drift apart.
Nothing else in milesbook imports this module (Lightning stays optional).
"""
from __future__ import annotations

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("milesbook.lightning needs Lightning: pip install 'milesbook[lightning]'") from error

from .balancer import Balancer
from .errors import UserError
from .methods import Method


def edits_each_step(method: Method) -> bool:
    """Does the method change gradients or its state from each batch (a hook after backward or step)?"""
    kind = type(method)
    return kind.after_backward is not Method.after_backward or kind.after_step is not Method.after_step


class BalancingCallback(pl.Callback):
    """A balancing method (`milesbook.Balancer`) on a LightningModule whose forward follows the model
    contract and whose optimizer's param groups are named "fusion" and one per modality. `knobs` are the
    method's own (tau=, mu= for MILES); `model`: the attribute of your module that holds the fusion model
    (e.g. "net"), when a method works on its parts (OGM on `encoders`, MSES on `heads`…) — the methods
    then read and score that model; default the module itself. Other options as `Balancer`'s."""

    def __init__(self, method: str = "miles", *, task: str = "multiclass", num_classes: int | None = None,
                 modalities=None, seed: int = 0, model: str | None = None, **knobs):
        self.method_name, self.task, self.num_classes, self.model = method, task, num_classes, model
        self.modalities, self.seed, self.knobs = modalities, seed, knobs
        self.balancer: Balancer | None = None
        self._pending: dict | None = None  # a checkpoint's state until the balancer exists
        self._stepped = False  # did the optimizer step on this batch (not with accumulation or a skipped AMP step)?

    def on_train_start(self, trainer, pl_module) -> None:
        # Here, not at fit start: the training loader exists now (PMR and AIM-R sample it, MLA counts it).
        if trainer.check_val_every_n_epoch != 1 or trainer.val_check_interval != 1.0:
            raise UserError("BalancingCallback: validation must run once per training epoch (check_val_every_n_epoch=1, "
                            "val_check_interval=1.0): the method's rule follows it")
        if len(trainer.optimizers) != 1:
            raise UserError(f"BalancingCallback needs one optimizer; configure_optimizers gave {len(trainer.optimizers)}")
        model = pl_module if self.model is None else getattr(pl_module, self.model, None)
        if model is None:
            raise UserError(f"BalancingCallback(model={self.model!r}): {type(pl_module).__name__} has no such attribute")
        # A resumed fit has its optimizer restored already: what a method sets up (MSLR's rates) must not undo it.
        restored = [group["lr"] for group in trainer.optimizers[0].param_groups]
        self.balancer = Balancer(model, trainer.optimizers[0], self.method_name, task=self.task,
                                 num_classes=self.num_classes, modalities=self.modalities, seed=self.seed,
                                 train_loader=trainer.train_dataloader, where="Lightning",
                                 epochs=trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None, **self.knobs)
        method = self.balancer.method
        if trainer.accumulate_grad_batches > 1 and edits_each_step(method):
            raise UserError(f"{method.name} edits each step's gradients from one batch; with accumulate_grad_batches="
                            f"{trainer.accumulate_grad_batches} a step sums several. Set it to 1 for this method")
        if trainer.world_size > 1 and edits_each_step(method):
            raise UserError(f"{method.name} edits each step's gradients from its own batch; with {trainer.world_size} "
                            "processes the ranks' weights would drift apart. Run it on one device, or pick a loss "
                            "or rate rule (miles, aux, mslr-*, mses, pmr)")
        if method.steps_in_loss:
            raise UserError(f"{method.name} steps the optimizer inside its loss, which Lightning's closure owns; "
                            "use milesbook.Balancer in a plain loop")
        pl_module.balancing = self
        if self._pending:  # a checkpoint's state, restored before training started
            for group, lr in zip(trainer.optimizers[0].param_groups, restored):
                group["lr"] = lr
            self.balancer.load_state_dict(self._pending)
            self._pending = None

    def loss(self, out, labels):
        """The method's training loss of one batch (call it in `training_step`)."""
        if self.balancer is None:
            raise UserError("BalancingCallback.loss was called before training started; pass the callback to "
                            "L.Trainer(callbacks=[...])")
        return self.balancer.loss(out, labels)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.balancer._batch is None:
            raise UserError("training_step did not return self.balancing.loss(out, labels): the method never saw "
                            "the batch")
        self.balancer.after_backward()
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stepped:
            self.balancer.after_step()
            self._stepped = False

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.balancer is None or trainer.state.fn != "fit":
            return  # validate() after fit, or the sanity check before it, decides nothing
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        self.balancer.end_epoch(loader)  # fit's validation runs under no_grad, not inference mode: state made here trains on

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.balancer.epoch != trainer.current_epoch + 2:
            raise UserError(f"BalancingCallback: no validation ran in epoch {trainer.current_epoch + 1}; the method's "
                            "rule reads the model on the validation loader every epoch: give fit() a validation loader")
        if self.balancer.should_stop:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return self.balancer.state_dict() if self.balancer is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.balancer is not None:
            self.balancer.load_state_dict(state_dict)
        else:
            self._pending = state_dict  # put back once training starts and the balancer exists
