"""Your own data: a folder of .npy files written with numpy alone (or arrays in memory) trains with
every command, and each malformed variant is one line naming the file and the fault."""
import json

import numpy as np
import pytest
import torch

import milesbook as mb
import milesbook.cli as cli
from milesbook.datasets import Rows, from_arrays, from_folder
from milesbook.errors import UserError

from .conftest import run_cli


def write_folder(folder, n=300, classes=3, seed=0, **extra):
    """A small paired dataset as a user would save it: audio vectors, 8×8 single-channel images
    stored (N, H, W), int labels; `extra` {file stem: array} replaces or adds files."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    arrays = {"audio": (rng.normal(size=(n, 12)) + 0.4 * labels[:, None]).astype(np.float32),
              "image": (rng.normal(size=(n, 8, 8)) + labels[:, None, None]).astype(np.float32),
              "labels": labels.astype(np.int64), **extra}
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if array is not None:
            np.save(folder / f"{name}.npy", array)
    return folder


def one_line_error(capsys, *args) -> str:
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_numpy_folder_trains_from_the_command_line(tmp_path):
    folder = write_folder(tmp_path / "mine")
    result = run_cli("train", "--dataset", folder, "--method", "miles", "--epochs", "2", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["modalities"] == ["audio", "image"] and 0 < summary["test_acc_fusion"] <= 1
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert record["data.name"] == "mine" and record["data.origin"] == f"folder {folder.resolve()}"


def test_the_folder_is_read_on_demand_and_split_stratified(tmp_path):
    data = from_folder(write_folder(tmp_path / "mine", n=300))
    train = data.splits["train"].inputs["image"]
    assert isinstance(train, Rows) and isinstance(train.array, np.memmap)  # nothing read whole
    assert data.shapes == {"audio": (12,), "image": (1, 8, 8)}  # (N, H, W) got its channel axis
    assert data.sizes() == {"train": 210, "val": 45, "test": 45}
    for split in data.splits.values():  # 70/15/15 of each class
        assert torch.bincount(split.labels).tolist() == [len(split) // 3] * 3
    batch = train[torch.tensor([5, 0, 2])]
    rows = train.index[[5, 0, 2]]
    assert torch.equal(batch, torch.from_numpy(np.load(tmp_path / "mine" / "image.npy")[rows][:, None]))
    mean, std = data.normalize["image"]  # standardized with the training split's statistics
    values = np.load(tmp_path / "mine" / "image.npy")[train.index]
    assert mean == pytest.approx(values.mean(), rel=1e-6) and std == pytest.approx(values.std(), rel=1e-6)


def test_split_file_and_token_ids(tmp_path):
    n = 300
    split = np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)
    tokens = np.random.default_rng(1).integers(1, 50, size=(n, 7))
    data = from_folder(write_folder(tmp_path / "mine", n=n, split=split, text=tokens))
    assert data.sizes() == {"train": 200, "val": 50, "test": 50}
    assert data.encoder_options["text"] == {"tokens": True, "vocab_size": int(tokens.max()) + 1, "kind": "bow"}
    assert "text" not in data.normalize
    summary = mb.train(mb.TrainConfig(method="aux", epochs=1), tmp_path / "run", dataset=data, progress=False)
    assert summary["dataset"] == "mine" and summary["modalities"] == ["audio", "image", "text"]


@pytest.mark.parametrize("fault, files, expected", [
    ("lengths", {"audio": np.zeros((299, 12), np.float32)}, "audio.npy has 299 samples but labels.npy has 300"),
    ("nan", {"audio": np.where(np.arange(300)[:, None] == 17, np.nan, np.zeros((300, 12))).astype(np.float32)},
     "audio.npy holds NaN or inf (first at sample 17)"),
    ("inf", {"image": np.full((300, 8, 8), np.inf, np.float32)}, "image.npy holds NaN or inf (first at sample 0)"),
    ("float labels", {"labels": np.arange(300) % 3 + 0.5}, "labels.npy: labels must be integer class ids"),
    ("negative label", {"labels": np.where(np.arange(300) == 4, -1, np.arange(300) % 3)},
     "labels.npy: class id -1 at sample 4 is outside 0..2"),
    ("split value", {"split": np.where(np.arange(300) == 9, 3, np.arange(300) % 3)},
     "split.npy: sample 9 is 3; use 0 = train, 1 = val, 2 = test"),
    ("split word", {"split": np.array(["train", "valid", "test"] * 100)}, "split.npy: sample 1 is 'valid'"),
    ("object split", {"split": np.array([0, 1, 2] * 100, dtype=object)}, "split.npy holds Python objects"),
    ("missing class", {"split": np.where((np.arange(300) // 3 % 3 == 1) & (np.arange(300) % 3 == 2), 0,
                                         np.arange(300) // 3 % 3)},
     "split.npy: the val split has no sample of class 2"),
    ("empty split", {"split": np.arange(300) % 2}, "split.npy: the test split is empty"),
    ("no labels", {"labels": None}, "no labels.npy"),
    ("one-dimensional", {"audio": np.zeros(300, np.float32)}, "audio.npy has shape (300,)"),
])
def test_each_malformed_folder_is_one_line_naming_the_file(tmp_path, capsys, fault, files, expected):
    folder = write_folder(tmp_path / "mine", **files)
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert expected in err and str(folder) in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_class_names_in_meta_bound_the_labels(tmp_path, capsys):
    folder = write_folder(tmp_path / "mine")
    (folder / "meta.json").write_text(json.dumps({"class_names": ["zero", "one"]}))
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert "class id 2 at sample 2 is outside 0..1 (meta.json names that many classes)" in err


def test_from_arrays_trains_and_records_its_own_name_and_data(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(240) % 4
    arrays = {"left": rng.normal(size=(240, 6)) + labels[:, None], "right": rng.normal(size=(240, 5))}
    data = from_arrays(arrays, labels, name="sensors")
    assert data.origin == "in memory" and data.modalities == ("left", "right")
    summary = mb.train(mb.TrainConfig(method="miles", epochs=2), tmp_path / "run", dataset=data, progress=False)
    record = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert summary["dataset"] == "sensors" and record["data.name"] == "sensors" and record["data.origin"] == "in memory"
    # A changed array is other data: the finished run is not reused.
    changed = from_arrays({**arrays, "right": arrays["right"] + 1.0}, labels, name="sensors")
    assert mb.provenance.data_fingerprint(changed) != record["data.fingerprint"]
    with pytest.raises(UserError, match="int"):
        from_arrays(arrays, labels.astype(float) + 0.25)


def test_gblend_keeps_a_folder_on_disk(tmp_path):
    data = from_folder(write_folder(tmp_path / "mine"))
    config = mb.TrainConfig(method="gblend", epochs=1, gblend_every=1)
    trainer = mb.train.__globals__["Trainer"](config, tmp_path / "run", data, False)
    held, kept = trainer.splits["gblend_holdout"][0]["audio"], trainer.splits["train"][0]["audio"]
    assert isinstance(held, Rows) and isinstance(kept, Rows) and len(held) + len(kept) == 210
    assert not set(held.index) & set(kept.index)


# -- your own encoders ---------------------------------------------------------------------------

class TinyAudioNet(torch.nn.Module):
    """What a user brings: any module mapping a batch to (B, D) — here D = 24, not the model's width."""

    def __init__(self, in_features=12):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(in_features, 32), torch.nn.Tanh(), torch.nn.Linear(32, 24))

    def forward(self, x):
        return self.net(x)


def tiny_audio_net(shape, feature_dim):
    """A factory for `--encoder audio=tests.test_user_data:tiny_audio_net`."""
    return TinyAudioNet(shape[0])


@pytest.mark.parametrize("method", ["vanilla", "aux", "miles"])
def test_your_own_encoder_trains_under_each_method(tmp_path, method):
    data = from_folder(write_folder(tmp_path / "mine"))
    torch.manual_seed(5)
    mine = TinyAudioNet()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    summary = mb.train(mb.TrainConfig(method=method, epochs=2), tmp_path / "run", dataset=data, progress=False,
                       encoders={"audio": mine})
    assert 0 < summary["test_acc_fusion"] <= 1
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())  # the run trained a copy
    weights = torch.load(tmp_path / "run" / "selected.pt", weights_only=True)["model"]
    assert weights["encoders.audio.0.net.0.weight"].shape == (32, 12)  # yours, then 24 → 64
    assert weights["encoders.audio.1.weight"].shape == (64, 24)
    identity = json.loads((tmp_path / "run" / "provenance.json").read_text())["encoders"]["audio"]
    assert identity == {**mb.provenance.encoder_identity(mine), "origin": "in memory"}
    assert identity["class"] == "tests.test_user_data.TinyAudioNet" and identity["parameters"] == 12 * 32 + 32 + 32 * 24 + 24


def test_other_initial_weights_are_another_run(tmp_path):
    data = from_folder(write_folder(tmp_path / "mine"))
    config = mb.TrainConfig(method="aux", epochs=1)
    torch.manual_seed(1)
    first = TinyAudioNet()
    mb.run_or_reuse(config, tmp_path / "run", data, progress=False, encoders={"audio": first})
    assert mb.run_or_reuse(config, tmp_path / "run", data, progress=False, encoders={"audio": first})["epochs"] == 1
    assert not (tmp_path / "run.stale-1").exists()  # the same encoder: reused
    torch.manual_seed(2)
    mb.run_or_reuse(config, tmp_path / "run", data, progress=False, encoders={"audio": TinyAudioNet()})
    assert (tmp_path / "run.stale-1").is_dir()  # another encoder: the old run moved aside, retrained


def test_an_encoder_of_the_wrong_shape_is_one_line(tmp_path):
    data = from_folder(write_folder(tmp_path / "mine"))

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x[:, :, None]
    with pytest.raises(UserError, match=r"returns \(2, 12, 1\) for a batch of \(2, 12\); it must return features"):
        mb.train(mb.TrainConfig(method="aux", epochs=1), tmp_path / "run", dataset=data, progress=False,
                 encoders={"audio": Flat()})
    with pytest.raises(UserError, match="encoders given for \\['video'\\]"):
        mb.train(mb.TrainConfig(method="aux", epochs=1), tmp_path / "run", dataset=data, progress=False,
                 encoders={"video": TinyAudioNet()})


def test_a_factory_on_the_command_line(tmp_path, capsys):
    folder = write_folder(tmp_path / "mine")
    code = cli.main(["train", "--dataset", str(folder), "--method", "miles", "--epochs", "1", "--out",
                     str(tmp_path / "run"), "--encoder", "audio=tests.test_user_data:tiny_audio_net"])
    assert code == 0, capsys.readouterr().err
    weights = torch.load(tmp_path / "run" / "selected.pt", weights_only=True)["model"]
    assert weights["encoders.audio.0.net.0.weight"].shape == (32, 12)
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "bad",
                         "--encoder", "audio=tests.no_such_module:net")
    assert "cannot import net from tests.no_such_module" in err


def seeded_audio_net(shape):
    """A factory that rebuilds the same initial weights (what `verify --encoder` needs)."""
    torch.manual_seed(5)
    return TinyAudioNet(shape[0])


def test_verify_asks_for_data_and_encoders_given_in_memory(tmp_path, capsys):
    from milesbook.verify import verify
    folder = write_folder(tmp_path / "mine")
    arrays = {m: np.load(folder / f"{m}.npy") for m in ("audio", "image")}
    data = from_arrays(arrays, np.load(folder / "labels.npy"), name="sensors")
    mb.train(mb.TrainConfig(method="miles", epochs=2), tmp_path / "run", dataset=data, progress=False,
             encoders={"audio": seeded_audio_net((12,))})
    with pytest.raises(UserError, match="given in memory \\(sensors\\).*--dataset PATH"):
        verify(tmp_path / "run")
    with pytest.raises(UserError, match="audio encoder\\(s\\) given in memory \\(tests.test_user_data.TinyAudioNet\\)"):
        verify(tmp_path / "run", dataset=str(folder))
    code = verify(tmp_path / "run", dataset=str(folder), encoder="audio=tests.test_user_data:seeded_audio_net")
    assert code == 0 and "verified: 2 epochs identical" in capsys.readouterr().out


def test_a_class_too_small_for_the_default_split_names_the_labels(tmp_path, capsys):
    """Without split.npy the split is ours: a class of two samples leaves val without it, and the line
    names labels.npy and the default split, not a split file that does not exist."""
    labels = np.where(np.arange(300) < 2, 3, np.arange(300) % 3)
    folder = write_folder(tmp_path / "mine", labels=labels)
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert "labels.npy (split 70/15/15 by class, no split file)" in err and "has no sample of class 3" in err
