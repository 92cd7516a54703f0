"""S-MNIST: the data script and loader on fixtures in the real files' format, damaged files, the
paper's 8,000/2,000/2,000 sampling on arrays of the real shapes, and a short training run."""
import json
import sys

import numpy as np
import pytest

import milesbook as mb
from milesbook.datasets import smnist
from milesbook.errors import UserError

from .conftest import run_cli
from .fixtures import write_smnist

SMALL = (60, 20, 20)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MILESBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_prepare_from_files_then_load(tmp_path, cache, capsys):
    source = write_smnist(tmp_path / "download")
    assert not mb.datasets.REGISTRY["smnist"].prepared()
    smnist.prepare(source=source, sizes=SMALL)
    assert mb.datasets.REGISTRY["smnist"].prepared()
    data = mb.load_dataset("smnist")
    assert data.modalities == ("image", "audio") and data.shapes == {"image": (1, 28, 28), "audio": (1, 28, 28)}
    assert data.sizes() == {"train": 60, "val": 20, "test": 20}
    assert abs(data.splits["train"].inputs["image"].mean().item()) < 1e-4  # scaled with train statistics
    stored = np.load(cache / "smnist" / "prepared.npz")
    raw_labels = np.load(source / "labels_test.npy")
    assert (raw_labels[stored["test_index"]] == stored["test_labels"]).all()  # rows stay paired with labels
    smnist.prepare(source=source, sizes=SMALL)  # a second run finds it done
    assert "already prepared" in capsys.readouterr().out


def test_one_hot_and_uint8_variants_are_read(tmp_path, cache):
    source = write_smnist(tmp_path / "d", pixel_dtype=np.uint8)
    labels = np.load(source / "labels_train.npy")
    np.save(source / "labels_train.npy", np.eye(10)[labels])
    arrays = smnist.build(_copy_raw(source, tmp_path / "raw"), sizes=SMALL)
    train_labels = labels[arrays["train_index"]]
    assert (arrays["train_labels"] == train_labels).all()


def _copy_raw(source, raw):
    import shutil
    shutil.copytree(source, raw)
    return raw


def test_truncated_file_is_named_and_nothing_is_marked_complete(tmp_path, cache):
    source = write_smnist(tmp_path / "download")
    data = (source / "data_sp_train.npy").read_bytes()
    (source / "data_sp_train.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="data_sp_train.npy .*(truncated|shape)"):
        smnist.prepare(source=source, sizes=SMALL)
    assert not smnist.is_prepared() and not (cache / "smnist" / "prepared.npz").exists()
    with pytest.raises(UserError, match="not prepared; run: python data_scripts/smnist.py"):
        mb.load_dataset("smnist")


def test_wrong_shape_is_refused(tmp_path, cache):
    source = write_smnist(tmp_path / "download")
    np.save(source / "data_wr_test.npy", np.zeros((40, 100)))
    with pytest.raises(UserError, match=r"data_wr_test.npy has shape \(40, 100\); expected \(40, 784\)"):
        smnist.prepare(source=source, sizes=SMALL)


def test_missing_file_in_from_folder(tmp_path, cache):
    source = write_smnist(tmp_path / "download")
    (source / "labels_test.npy").unlink()
    with pytest.raises(UserError, match="missing labels_test.npy"):
        smnist.prepare(source=source, sizes=SMALL)


def test_paper_protocol_on_arrays_of_the_real_shapes(tmp_path):
    """60000×784, 60000×507 and labels (10000 rows for test): the paper's 8,000/2,000/2,000 sampling,
    fixed by the seed. The arrays are memory-mapped zeros, so this costs little disk or time."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(1)
    for part, n in (("train", 60000), ("test", 10000)):
        for name, width in (("data_wr", 784), ("data_sp", 507)):
            np.lib.format.open_memmap(raw / f"{name}_{part}.npy", mode="w+", dtype=np.float32, shape=(n, width)).flush()
        np.save(raw / f"labels_{part}.npy", rng.integers(0, 10, n))
    first, again = smnist.build(raw, seed=0), smnist.build(raw, seed=0)
    assert first["train_image"].shape == (8000, 1, 28, 28) and first["val_audio"].shape == (2000, 1, 28, 28)
    assert len(first["test_labels"]) == 2000
    assert (first["train_index"] == again["train_index"]).all() and (first["test_index"] == again["test_index"]).all()
    assert not set(first["train_index"]) & set(first["val_index"])
    other = smnist.build(raw, seed=1)
    assert (other["train_index"] != first["train_index"]).any()


def test_data_script_help_and_two_epoch_run(tmp_path, cache):
    import subprocess
    script = mb.notebooks.notebooks_dir().parent / "data_scripts" / "smnist.py"
    helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "zenodo" in helped.stdout.lower() and "--from" in helped.stdout
    assert "hundred MB" in helped.stdout and "~/.cache/milesbook/smnist" in helped.stdout
    source = write_smnist(tmp_path / "download")
    prepared = subprocess.run([sys.executable, str(script), "--from", str(source)], capture_output=True, text=True)
    assert prepared.returncode == 2 and "too small for (8000, 2000, 2000)" in prepared.stderr  # the fixture is tiny
    smnist.prepare(source=source, sizes=SMALL)
    result = run_cli("train", "--dataset", "smnist", "--method", "miles", "--epochs", "2", "--batch-size", "32",
                     "--out", tmp_path / "run", "--encoder", "resnet10")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dataset"] == "smnist" and len(mb.read_history(tmp_path / "run")) == 2
