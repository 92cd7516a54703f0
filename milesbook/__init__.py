"""milesbook: balanced multimodal learning with MILES, its baselines, and notebooks that explain it."""
from ._version import __version__

from .datasets import MultimodalDataset, Split, from_arrays, from_folder, list_datasets, load_dataset
from .miles import MILES, conditional_utilization, decide, utilization_gap
from .models import FusionOutput, JointFusionModel, build_model
from . import readings
from .readings import utilization
from .balancer import Balancer
from . import notebooks
from .comparison import compare, load_summaries, sweep
from .diagnose import diagnose
from .config import TrainConfig
from .runs import read_history
from .train import run_or_reuse, train
from . import provenance


def __getattr__(name: str):
    # `mb.plots` on first use: matplotlib costs ≈ 0.4 s of every command's start-up otherwise.
    if name == "plots":
        import importlib
        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module 'milesbook' has no attribute {name!r}")
