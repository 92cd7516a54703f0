"""CREMA-D, LUMA and MM-IMDb: each data script on a fixture in the real files' format (prepare, load,
a 2-epoch run with the paper's encoders), damaged files caught without marking the cache complete,
`--help` saying what, how big and where, and `milesbook datasets` listing the five datasets."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import milesbook as mb
from milesbook.datasets import cremad, luma, mmimdb
from milesbook.errors import UserError

from .conftest import run_cli
from .fixtures import write_cremad, write_luma, write_mmimdb, write_tiny_bert

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"
CASES = {  # name: (module, fixture writer, words --help must contain, encoder of the paper)
    "cremad": (cremad, write_cremad, ["github.com/CheyneyComputerScience/CREMA-D", "7.5 GB", "sha256"], "resnet18"),
    "luma": (luma, write_luma, ["huggingface.co/datasets/bezirganyan/LUMA", "163 MB", "split_indices"], "resnet6"),
    "mmimdb": (mmimdb, write_mmimdb, ["archive.org/details/mmimdb", "8.1 GB", "md5"], "image=resnet50,text=auto"),
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MILESBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def script(name, *args):
    return subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", CASES)
def test_help_says_what_how_big_and_where(name):
    helped = script(name, "--help")
    assert helped.returncode == 0
    for words in CASES[name][2] + ["--from", f"~/.cache/milesbook/{name}", "Re-running is safe"]:
        assert words in helped.stdout, words


@pytest.mark.parametrize("name", CASES)
def test_prepare_load_and_train_two_epochs(name, tmp_path, cache):
    module, write, _, encoder = CASES[name]
    source = write(tmp_path / "download")
    assert not mb.datasets.REGISTRY[name].prepared()
    prepared = script(name, "--from", source)
    assert prepared.returncode == 0, prepared.stderr
    assert "licence" in prepared.stdout and "cite:" in prepared.stdout
    assert (cache / name / "prepared.json").exists() and mb.datasets.REGISTRY[name].prepared()
    again = script(name, "--from", source)
    assert again.returncode == 0 and "already prepared" in again.stdout

    data = mb.load_dataset(name)
    assert data.modalities == mb.datasets.REGISTRY[name].modalities
    for split in data.splits.values():
        assert len(split) > 0 and all(len(x) == len(split) for x in split.inputs.values())
    result = run_cli("train", "--dataset", name, "--method", "miles", "--epochs", "2", "--batch-size", "16",
                     "--encoder", encoder, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dataset"] == name and len(mb.read_history(tmp_path / "run")) == 2
    assert (tmp_path / "run" / "last.pt").exists()


def test_cremad_protocol(tmp_path, cache):
    cremad.prepare(source=write_cremad(tmp_path / "d"), progress=False)
    data = mb.load_dataset("cremad")
    assert data.shapes == {"audio": (1, 224, 224), "video": (3, 224, 224)}
    assert str(data.splits["train"].inputs["video"].dtype) == "torch.uint8"
    marker = json.loads((cache / "cremad" / "prepared.json").read_text())
    assert marker["skipped"] == {"1076_MTI_SAD_XX": "no audio"}  # the known-bad clip, left out
    assert sum(data.sizes().values()) == 48 and data.sizes()["val"] == data.sizes()["test"] == 7
    stored = np.load(cache / "cremad" / "prepared.npz")
    for split in ("train", "test"):  # the label is the clip name's emotion; the frame shows its colour
        names, labels = stored[f"{split}_clip"], stored[f"{split}_labels"]
        assert [cremad.EMOTIONS.index(n.split("_")[2]) for n in names] == labels.tolist()
        red = stored[f"{split}_video"][:, 0, :, 40:].astype(float).mean((1, 2))
        assert np.allclose(red, 40 * labels, atol=12)
    assert cremad.split_sizes(7442) == (5210, 1116, 1116) and cremad.split_sizes(7439) == (5207, 1116, 1116)


def test_luma_pairs_follow_the_split_indices(tmp_path, cache):
    luma.prepare(source=write_luma(tmp_path / "d"), progress=False)
    data = mb.load_dataset("luma")
    assert data.shapes == {"audio": (1, 96, 96), "image": (3, 96, 96)} and data.num_classes == 42
    assert data.sizes() == {"train": 42 * 4, "val": 42, "test": 42 * 2}
    for split in data.splits.values():  # the fixture's red plane is 4·class plus noise in [0, 40)
        red = split.inputs["image"][:, 0].float().mean((1, 2))
        assert ((red - 4 * split.labels) > 10).all() and ((red - 4 * split.labels) < 30).all()
    stored = np.load(cache / "luma" / "prepared.npz")
    rows = (tmp_path / "d" / "audio" / "datalist.csv").read_text().splitlines()[1:]
    for split in ("train", "val", "test"):  # each audio row's own label is the pair's label
        spoken = [luma.CLASSES.index(rows[r].split(",")[1]) for r in stored[f"{split}_audio_row"]]
        assert spoken == stored[f"{split}_labels"].tolist()
    test_rows = set(stored["test_audio_row"].tolist())
    assert not test_rows & set(stored["train_audio_row"].tolist())


def test_mmimdb_labels_and_bert_text(tmp_path, cache):
    source = write_mmimdb(tmp_path / "d", tarball=False)
    mmimdb.prepare(source=source, progress=False)
    data = mb.load_dataset("mmimdb")
    assert data.task == "multilabel" and data.shapes["image"] == (3, 256, 160) and data.num_classes == 23
    assert data.sizes() == {"train": 40, "val": 12, "test": 12}
    split = json.loads((source / "mmimdb" / "split.json").read_text())
    for movie_id, labels in zip(split["dev"], data.splits["val"].labels):
        genres = json.loads((source / "mmimdb" / "dataset" / f"{movie_id}.json").read_text())["genres"]
        assert [mmimdb.GENRES[i] for i in labels.nonzero().flatten()] == [g for g in genres if g != "News"]
    assert data.encoder_options["text"]["kind"] == "bow"

    bert = write_tiny_bert(tmp_path / "bert")
    with_bert = mb.load_dataset("mmimdb", text_model=str(bert))
    assert with_bert.encoder_options["text"]["kind"] == "bert" and with_bert.shapes["text"] == (128,)
    summary = mb.train(mb.TrainConfig(dataset="mmimdb", method="miles", epochs=2, batch_size=16,
                                      encoder="image=cnn,text=auto"), tmp_path / "run", dataset=with_bert,
                       progress=False)
    assert summary["metric"] == "f1micro" and 0 <= summary["test_f1micro_fusion"] <= 1
    with pytest.raises(UserError, match="no tokenizer or config in"):
        mb.load_dataset("mmimdb", text_model=str(tmp_path))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {  # name: (damage the fixture, the file the message must name)
    "cremad": (lambda d: _truncate(d / "AudioWAV" / "1002_TIE_HAP_HI.wav"), "1002_TIE_HAP_HI.wav"),
    "luma": (lambda d: _truncate(d / "cifar-100-python.tar.gz"), "cifar-100-python.tar.gz"),
    "mmimdb": (lambda d: _truncate(d / "mmimdb.tar.gz"), "mmimdb.tar.gz"),
}


@pytest.mark.parametrize("name", CASES)
def test_damaged_file_is_named_and_nothing_is_marked_complete(name, tmp_path, cache):
    module, write, _, _ = CASES[name]
    source = write(tmp_path / "download")
    damage, culprit = DAMAGE[name]
    damage(source)
    with pytest.raises(UserError, match=f"{culprit}.*(truncated|damaged)"):
        module.prepare(source=source, progress=False)
    assert not module.is_prepared() and not (cache / name / "prepared.npz").exists()
    with pytest.raises(UserError, match=f"not prepared; run: python data_scripts/{name}.py"):
        mb.load_dataset(name)


def test_damaged_video_and_poster_are_named(tmp_path, cache):
    source = write_cremad(tmp_path / "c")
    (source / "VideoFlash" / "1001_IEO_ANG_XX.flv").write_bytes(b"FLV\x01 not really a video" * 4)
    with pytest.raises(UserError, match="1001_IEO_ANG_XX.flv is truncated or damaged"):
        cremad.prepare(source=source, progress=False)
    source = write_mmimdb(tmp_path / "m", tarball=False)
    _truncate(source / "mmimdb" / "dataset" / "0000003.jpeg")
    with pytest.raises(UserError, match="0000003.jpeg is truncated or damaged"):
        mmimdb.prepare(source=source, progress=False)
    assert not cremad.is_prepared() and not mmimdb.is_prepared()


def test_missing_files_in_from_folder(tmp_path, cache):
    source = write_luma(tmp_path / "l")
    (source / "split_indices" / "image_test.txt").unlink()
    with pytest.raises(UserError, match="missing split_indices/image_test.txt"):
        luma.prepare(source=source, progress=False)
    with pytest.raises(UserError, match="no AudioWAV/\\*.wav or VideoFlash/\\*.flv"):
        cremad.prepare(source=tmp_path / "empty", progress=False)


def test_datasets_command_lists_five_datasets_and_the_generator():
    result = run_cli("datasets")
    assert result.returncode == 0
    datasets, synthetic = result.stdout.split("Synthetic generator")
    listed = [line.split()[0] for line in datasets.splitlines()[1:] if line.strip()]
    assert listed == ["digits-av", "smnist", "cremad", "luma", "mmimdb", "mfeat"]
    assert "toy" in synthetic and "SYNTHETIC" in synthetic
    for name in listed[1:]:
        line = next(l for l in datasets.splitlines() if l.split() and l.split()[0] == name)
        assert ("ready" in line) or (f"not prepared — run: python data_scripts/{name}.py" in line)


def test_gpu_notebook_trains_a_prepared_paper_dataset(tmp_path, cache):
    """Notebook 04 picks up a prepared paper dataset and trains it with its registered protocol (here
    LUMA's ResNet-6, one epoch, on the fixture) through the same code path as the full GPU run."""
    luma.prepare(source=write_luma(tmp_path / "d"), progress=False)
    mb.notebooks.run(["04_full_protocol"], quick=False, out=tmp_path / "nb",
                     parameters={"DATASETS": ["luma"], "METHODS": ["vanilla", "miles"], "FUSIONS": ["concat"],
                                 "EPOCHS": 1, "SEEDS": 1, "DEVICE": "cpu"})
    record = mb.notebooks.read_record(tmp_path / "nb" / "work", "04")
    assert set(record["datasets"]) == {"luma"}
    rows = record["datasets"]["luma"]["concat"]
    assert set(rows) == {"unimodal-audio", "unimodal-image", "vanilla", "miles"}
    assert 0 <= rows["miles"]["fusion_mean"] <= 1
    config = json.loads((tmp_path / "nb" / "work" / "04-luma-1ep" / "miles-concat" / "seed0" / "config.json").read_text())
    assert config["encoder"] == "resnet6" and config["dataset"] == "luma"


def test_stratified_splits_draw_the_same_samples_as_before():
    """The splits decide which sample lands where, so every golden number: pinned to what digits-av's
    `stratified_split` and prepare's `stratified_sizes` drew before they became `datasets.splits`."""
    from milesbook.datasets.splits import stratified_sizes, stratified_split
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2, 0, 1])
    assert [p.tolist() for p in stratified_split(labels, (0.6, 0.2, 0.2), np.random.default_rng(3))] == \
        [[1, 2, 3, 4, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19], [5, 7, 9], [0, 8, 10]]
    assert [p.tolist() for p in stratified_sizes(labels, (11, 4, 3), np.random.default_rng(3))] == \
        [[1, 2, 3, 4, 6, 11, 13, 15, 17, 18, 19], [7, 12, 14, 16], [5, 9, 10]]
