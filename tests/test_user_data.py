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


# -- names, files, labels and meta.json a folder must not get wrong ---------------------------------

@pytest.mark.parametrize("name", ["fusion", "head_audio", "part_image", "without_audio", "audio_mfcc", "Labels",
                                  ".hidden", "a,b"])
def test_a_modality_name_that_would_clash_with_the_columns_is_refused(tmp_path, capsys, name):
    """history.csv names columns <prefix>_<metric>_<who>: a modality "fusion" would overwrite the fused
    model's columns (which choose the epoch), "head_audio" the audio head's, and with "_" in names
    delta_<a>_<b> is ambiguous. The rule: letters, digits, "-" and "." only, not fusion/labels/split."""
    folder = write_folder(tmp_path / "mine", **{name: np.zeros((300, 4), np.float32)})
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / name}.npy: modality name {name!r}" in err and "letters, digits, \"-\" and \".\"" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match=f"modality name {name!r}"):
        from_arrays({"audio": np.zeros((30, 4)), name: np.zeros((30, 4))}, np.arange(30) % 3)
    # what the rule lets through: hyphens, dots, digits, capitals, any letters
    data = from_arrays({"audio-mfcc": np.zeros((30, 4)), "Cam.2": np.zeros((30, 4)), "bild-ä": np.zeros((30, 4))},
                       np.arange(30) % 3)
    assert data.modalities == ("audio-mfcc", "Cam.2", "bild-ä")


class Unblocker:
    """Opening a FIFO for reading blocks until a writer comes. If the code under test opens `fifo`, this
    thread comes as a writer after `after` seconds and leaves at once (the reader reads nothing), so a test
    of the old code fails instead of hanging; `opened` says whether a reader was ever waiting."""

    def __init__(self, fifo, after=3.0):
        import threading
        self.fifo, self.after, self.opened, self.done = str(fifo), after, False, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import os
        import time
        began = time.monotonic()
        while not self.done.wait(0.05):
            if time.monotonic() - began < self.after:
                continue
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while a reader waits
            except OSError:
                continue
            self.opened = True
            os.close(fd)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


@pytest.mark.parametrize("where", ["audio.npy", "meta.json", "link to a fifo"])
def test_a_fifo_in_the_folder_is_refused_without_opening_it(tmp_path, capsys, where):
    import os
    folder = write_folder(tmp_path / "mine", image=None)
    (folder / "image.npy").unlink(missing_ok=True)
    if where == "link to a fifo":
        fifo = tmp_path / "elsewhere" / "pipe"
        fifo.parent.mkdir()
        os.mkfifo(fifo)
        os.symlink(fifo, folder / "image.npy")
        named = folder / "image.npy"
    else:
        fifo = named = folder / where
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
    with Unblocker(fifo) as guard:
        err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert not guard.opened, "the FIFO was opened"
    assert f"{named} is not a regular file (a FIFO" in err


def test_a_device_a_folder_and_a_dangling_link_are_refused_a_link_to_a_file_is_read(tmp_path, capsys):
    import os
    folder = write_folder(tmp_path / "mine")
    elsewhere = tmp_path / "kept-elsewhere.npy"
    os.replace(folder / "image.npy", elsewhere)
    os.symlink(elsewhere, folder / "image.npy")  # a folder assembled from links: read like the file itself
    data = from_folder(folder)
    assert torch.equal(data.splits["train"].inputs["image"][torch.tensor([0])],
                       torch.from_numpy(np.load(elsewhere)[data.splits["train"].inputs["image"].index[[0]]][:, None]))
    os.symlink("/dev/null", folder / "noise.npy")
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / 'noise.npy'} is not a regular file (a character device" in err
    (folder / "noise.npy").unlink()
    (folder / "video.npy").mkdir()
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / 'video.npy'} is not a regular file (a directory" in err
    (folder / "video.npy").rmdir()
    os.symlink(tmp_path / "gone.npy", folder / "depth.npy")
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / 'depth.npy'} is a link to {tmp_path / 'gone.npy'}, which does not exist" in err


def test_an_npz_that_is_a_fifo_is_refused(tmp_path, capsys):
    import os
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    with Unblocker(fifo) as guard:
        err = one_line_error(capsys, "train", "--dataset", fifo, "--epochs", "1", "--out", tmp_path / "run")
    assert not guard.opened and f"{fifo} is not a regular file (a FIFO" in err


def test_one_huge_class_id_is_one_line_and_memory_stays_bounded(tmp_path):
    """A class id of 10**12 made every structure sized by the number of classes grow without bound.
    Run in a child process limited to 6 GiB of address space, so the old code fails instead of
    taking the machine's memory."""
    import os
    import resource
    import subprocess
    import sys
    labels = np.arange(300) % 3
    labels[7] = 10 ** 12
    folder = write_folder(tmp_path / "mine", labels=labels)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    done = subprocess.run([sys.executable, "-m", "milesbook", "train", "--dataset", str(folder), "--epochs", "1",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit, env={**os.environ})
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
    assert f"{folder / 'labels.npy'}: class id 1000000000000 at sample 7 is above 9999" in done.stderr
    assert "\"num_classes\"" in done.stderr and "class_names" in done.stderr


@pytest.mark.parametrize("labels, meta, expected", [
    (np.where(np.arange(300) == 11, 20000, np.arange(300) % 3), None,
     "labels.npy: class id 20000 at sample 11 is above 9999, the most classes milesbook infers from the labels"),
    (np.where(np.arange(300) == 11, 5, np.arange(300) % 3), {"num_classes": 3},
     "labels.npy: class id 5 at sample 11 is outside 0..2 (meta.json declares 3 classes)"),
    (np.where(np.arange(300) == 11, 1e30, np.arange(300) % 3), None,
     "labels.npy: class id 1e+30 at sample 11 is above 9999"),
])
def test_class_ids_are_bounded_before_anything_is_sized_by_them(tmp_path, capsys, labels, meta, expected):
    folder = write_folder(tmp_path / "mine", labels=labels)
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert expected in err


def test_declared_classes_may_exceed_the_inferred_cap(tmp_path):
    labels = np.arange(300) % 3 * 6000  # ids 0, 6000, 12000: more than 9999 only with a declaration
    folder = write_folder(tmp_path / "mine", labels=labels, split=np.arange(300) // 3 % 3)
    (folder / "meta.json").write_text(json.dumps({"num_classes": 12001}))
    with pytest.raises(UserError, match="the train split has no sample of class 1 \\(and 11997 more\\)"):
        from_folder(folder)


@pytest.mark.parametrize("meta, expected", [
    ({"normalize": {"audio": ["a", "b"]}}, "normalize.audio[0]: input should be a valid number (got \"a\")"),
    ({"normalize": {"audio": [0, 0]}}, "normalize.audio[1]: input should be greater than 0 (got 0)"),
    ({"normalize": {"audio": [0, 1, 2]}}, "normalize.audio: array should have at most 2 items, not 3"),
    ({"normalize": {"audio": [float("nan"), 1]}}, "normalize.audio[0]: input should be a finite number"),
    ({"normalize": True}, "normalize: input should be an object (got true)"),
    ({"normalize": {"video": [0, 1]}}, "normalize.video: no modality video; the modalities are audio, image"),
    ({"class_names": 5}, "class_names: input should be a valid array (got 5)"),
    ({"class_names": ["a", "b", 3]}, "class_names[2]: input should be a valid string (got 3)"),
    ({"class_names": ["a", "b", "a"]}, "class_names: \"a\" is named twice"),
    ({"vocab_size": "abc"}, "vocab_size: input should be an object (got \"abc\")"),
    ({"vocab_size": {"audio": 10}}, "vocab_size.audio: audio holds values, not token ids"),
    ({"num_classes": "3"}, "num_classes: input should be a valid integer (got \"3\")"),
    ({"num_classes": 0}, "num_classes: input should be greater than or equal to 1 (got 0)"),
    ({"num_classes": 4, "class_names": ["a", "b", "c"]}, "num_classes: 4, but class_names names 3 classes"),
    ({"task": "regression"}, "task: input should be 'multiclass' or 'multilabel' (got \"regression\")"),
    ({"name": 7}, "name: input should be a valid string (got 7)"),
    ({"clas_names": ["a", "b", "c"]}, "unknown key \"clas_names\"; the keys are name, task, class_names, "
                                      "num_classes, normalize, vocab_size"),
])
def test_each_bad_meta_json_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, meta, expected):
    folder = write_folder(tmp_path / "mine")
    (folder / "meta.json").write_text(json.dumps(meta))
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / 'meta.json'}: {expected}" in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_meta_json_for_token_ids(tmp_path, capsys):
    tokens = np.random.default_rng(1).integers(1, 50, size=(300, 7))
    folder = write_folder(tmp_path / "mine", text=tokens)
    (folder / "meta.json").write_text(json.dumps({"vocab_size": {"text": 10}}))
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / 'meta.json'}: vocab_size.text: 10, but {folder / 'text.npy'} holds token id {tokens.max()}" in err
    (folder / "meta.json").write_text(json.dumps({"normalize": {"text": [0, 1]}}))
    err = one_line_error(capsys, "train", "--dataset", folder, "--epochs", "1", "--out", tmp_path / "run")
    assert f"{folder / 'meta.json'}: normalize.text: text holds token ids, which are not normalized" in err
    (folder / "meta.json").write_text(json.dumps({"vocab_size": {"text": 64}, "normalize": {"audio": [0.5, 2]},
                                                  "class_names": ["a", "b", "c"], "num_classes": 3, "name": "ok"}))
    data = from_folder(folder)
    assert data.encoder_options["text"]["vocab_size"] == 64 and data.normalize == {"audio": (0.5, 2.0)}
    assert data.name == "ok" and data.num_classes == 3


def test_from_arrays_checks_its_options_the_same_way():
    arrays, labels = {"a": np.zeros((30, 4)), "b": np.ones((30, 2))}, np.arange(30) % 3
    with pytest.raises(UserError, match=r"^from_arrays: normalize\.a\[1\]: input should be greater than 0 \(got 0"):
        from_arrays(arrays, labels, normalize={"a": (0, 0)})
    with pytest.raises(UserError, match=r"^from_arrays: class_names: input should be a valid array \(got 5\)"):
        from_arrays(arrays, labels, class_names=5)
    data = from_arrays(arrays, labels, normalize={"a": (np.float32(1), 2)})  # tuples and numpy numbers are fine
    assert data.normalize == {"a": (1.0, 2.0)}


def test_uint8_images_stored_n_h_w_train_as_one_channel(tmp_path, capsys):
    """README: a modality may be (N, H, W) images; uint8 ones were refused by the CNN ("needs (channels,
    height, width) samples, got shape (15, 16)")."""
    rng = np.random.default_rng(0)
    labels = np.arange(2000) % 4
    folder = tmp_path / "pixels"
    folder.mkdir()
    pixels = np.clip(rng.normal(100, 30, size=(2000, 15, 16)) + 25 * labels[:, None, None], 0, 255).astype(np.uint8)
    np.save(folder / "image.npy", pixels)
    np.save(folder / "audio.npy", rng.normal(size=(2000, 6)).astype(np.float32))
    np.save(folder / "labels.npy", labels)
    data = from_folder(folder)
    rows = data.splits["train"].inputs["image"]
    assert data.shapes["image"] == (1, 15, 16) and isinstance(rows.array, np.memmap)  # still on disk
    batch = rows[torch.tensor([3, 1])]
    assert batch.dtype == torch.uint8 and torch.equal(batch, torch.from_numpy(pixels[rows.index[[3, 1]]][:, None]))
    code = cli.main(["train", "--dataset", str(folder), "--method", "aux", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["modalities"] == ["audio", "image"] and summary["test_acc_image"] > 0.5  # it learned from the pixels
