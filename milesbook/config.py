"""`TrainConfig`: every setting of one run, and which of them can change its results.

The general settings are the fields below. Each method's own knobs (MILES's τ and μ, OGM's α, …)
are declared once beside the method (`milesbook.methods`, `Hyperparameter`) and kept in
`method_options`; they read and write like fields all the same — `TrainConfig(method="miles",
tau=0.3).tau`, `dataclasses.replace(config, mu=0.1)` — and `to_dict()` lists them flat, as
`config.json` stores them.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, fields

from .errors import UserError, check_choice
from .methods import all_hyperparameters, check_method_options, hyperparameters_of


def _threads_from_environment():
    """$MILESBOOK_THREADS as an int, else 1; a value that is no integer stays as it is, and `check`
    says so in one line."""
    text = os.environ.get("MILESBOOK_THREADS", "1")
    return int(text) if text.strip().isdigit() else text


@dataclass(eq=False)
class TrainConfig:
    dataset: str = "digits-av"
    dataset_options: dict = field(default_factory=dict)  # the dataset's documented knobs
    method: str = "miles"
    fusion: str = "concat"
    encoder: str = "auto"            # one kind for every modality, or per modality: "image=resnet50,text=bow"
    feature_dim: int = 64
    epochs: int = 30
    lr: float = 1e-3
    optimizer: str = "adam"          # "adam" (β 0.9, 0.999; the MILES paper) or "sgd" (momentum 0.9)
    weight_decay: float = 0.0        # the optimizer's L2 decay (OGM-GE's and PMR's official SGD: 1e-4)
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    # torch threads while training. Thread count changes floating-point sums, so it is a setting of the
    # run (in its cache key and provenance), never the machine's core count: 1 unless set, or
    # $MILESBOOK_THREADS (what `milesbook notebooks --threads` hands the notebooks).
    threads: int = field(default_factory=lambda: _threads_from_environment())
    utilization_split: str = "val"   # "val" (the paper's default) or "train" (Table VI ablation)
    probes: bool = True              # train detached linear probes on methods that train no heads
    eval_batch_size: int = 1000
    selection_tolerance: float = 0.005  # val fusion accuracies this close to the best count as tied
    test_split: bool = True          # evaluate test every epoch; False: test is never read (a search)
    method_options: dict = field(default_factory=dict)  # knobs of the methods, by name (see above)

    def __getattr__(self, name: str):
        # Only reached when `name` is not a field: a method's knob reads its value or its default.
        knob = all_hyperparameters().get(name) if not name.startswith("__") else None
        if knob is None:
            raise AttributeError(f"TrainConfig has no setting {name!r}")
        value = self.__dict__.get("method_options", {}).get(name, knob.default)
        return dict(value) if isinstance(value, dict) else value

    def __setattr__(self, name: str, value) -> None:
        if name in all_hyperparameters():
            self.method_options[name] = value
        else:
            object.__setattr__(self, name, value)

    def __eq__(self, other) -> bool:
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict:
        """Every setting, the methods' knobs flat beside the general fields (what config.json holds)."""
        general = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "method_options"}
        return {**general, **{name: getattr(self, name) for name in all_hyperparameters()}}

    def check(self) -> "TrainConfig":
        check_choice("utilization split", self.utilization_split, ["val", "train"])
        check_choice("device", self.device, ["auto", "cpu", "cuda"])
        check_choice("optimizer", self.optimizer, ["adam", "sgd"])
        if self.epochs < 1 or self.batch_size < 2:
            raise UserError(f"--epochs must be ≥ 1 and --batch-size ≥ 2, got {self.epochs}, {self.batch_size}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise UserError(f"--threads (or $MILESBOOK_THREADS) must be an integer ≥ 1, got {self.threads!r}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.weight_decay < 1:
            raise UserError(f"--weight-decay must be in [0, 1), got {self.weight_decay}")
        unknown = sorted(set(self.method_options) - set(all_hyperparameters()))
        if unknown:
            raise UserError(f"unknown method option(s) {unknown}; known: {', '.join(all_hyperparameters())}")
        check_method_options(self)
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config a `to_dict()` (or config.json) describes; keys no longer known are dropped."""
        known = {f.name for f in fields(cls)} | set(all_hyperparameters())
        return cls(**{k: v for k, v in values.items() if k in known})


def _accepting_knobs(init):
    """Let the dataclass's __init__ take the methods' knobs as keywords (`TrainConfig(tau=0.3)`) —
    also what `dataclasses.replace` passes — and file them under `method_options`."""
    @functools.wraps(init)
    def __init__(self, *args, method_options=None, **kwargs):
        options = dict(method_options or {})
        knobs = all_hyperparameters()
        for name in [k for k in kwargs if k in knobs]:
            options[name] = kwargs.pop(name)
        init(self, *args, method_options=options, **kwargs)
    return __init__


TrainConfig.__init__ = _accepting_knobs(TrainConfig.__init__)


ADDED_LATER = {"weight_decay": 0.0}  # settings newer than runs already made, at the value those ran with


def relevant_config(config: dict) -> dict:
    """The settings of a run's config (a `to_dict()` or config.json) that can change its results: the
    general ones but the device, and the knobs of the method it names — `compare --ogm-alpha 0.8`
    retrains OGM and reuses every other method's runs."""
    config = {**config, **config.get("method_options", {})}
    config.pop("method_options", None)
    config.setdefault("test_split", True)  # config.json written before the setting existed tested
    # A setting added later is in the key only away from its default: every earlier run keeps its key.
    for name, default in ADDED_LATER.items():
        if config.get(name, default) == default:
            config.pop(name, None)
    knobs = set(all_hyperparameters()) | (set(config) - {f.name for f in fields(TrainConfig)})
    own = {knob.name for knob in hyperparameters_of(config["method"])}
    for knob in hyperparameters_of(config["method"]):  # a knob declared after the run was made
        config.setdefault(knob.name, knob.default)
    return {k: v for k, v in config.items() if k != "device" and (k not in knobs or k in own)}
