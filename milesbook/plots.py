"""Figures drawn from run folders: MILES's learning dynamics (the paper's Fig. 2) and result bars."""
from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
    matplotlib.use("Agg")  # headless by default; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_dynamics(history: list[dict], modalities, title: str = "", tau: float | None = None,
                           axes=None):
    """Three panels over epochs: utilization u_m and δ (with τ), each encoder's learning rate, and the
    validation accuracy of the fusion head and each modality. `history` is `read_history(run)`."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    epochs = [row["epoch"] for row in history]
    ax = axes[0]
    for m in modalities:
        ax.plot(epochs, [row[f"u_{m}"] for row in history], label=f"u_{m}")
    ax.plot(epochs, [row["delta"] for row in history], "k--", label="δ")
    if tau is not None:
        ax.axhline(tau, color="grey", lw=0.8, ls=":", label=f"τ = {tau}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="epoch", ylabel="conditional utilization", title="utilization")
    ax.legend(fontsize=8)
    ax = axes[1]
    for m in modalities:
        ax.step(epochs, [row[f"lr_{m}"] for row in history], where="mid", label=f"lr {m}")
    ax.step(epochs, [row["lr_fusion"] for row in history], "k:", where="mid", label="lr fusion")
    top = max(row[f"lr_{m}"] for row in history for m in [*modalities, "fusion"])
    ax.set(xlabel="epoch", ylabel="learning rate", title="rates used in each epoch", ylim=(0, 1.1 * top))
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(epochs, [row["val_acc_fusion"] for row in history], "k", label="fusion")
    for m in modalities:
        ax.plot(epochs, [row[f"val_acc_{m}"] for row in history], label=m)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="heads", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


def plot_result_bars(table: list[dict], modalities, title: str = "", ax=None):
    """Grouped bars of test accuracy (mean ± std over seeds) per method: fusion and each modality.
    `table` is `compare.summarize(...)`'s rows."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * len(table) + 2, 3.6))
    columns = ["fusion", *modalities]
    width = 0.8 / len(columns)
    for j, column in enumerate(columns):
        xs, means, stds = [], [], []
        for i, row in enumerate(table):
            if row.get(f"{column}_mean") is not None:
                xs.append(i + (j - (len(columns) - 1) / 2) * width)
                means.append(100 * row[f"{column}_mean"])
                stds.append(100 * row[f"{column}_std"])
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=column)
    ax.set_xticks(range(len(table)), [row["method"] for row in table], rotation=20)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105), title=title)
    ax.legend(fontsize=8, ncols=len(columns))
    ax.figure.tight_layout()
    return ax
