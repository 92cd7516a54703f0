"""LUMA — Learning from Uncertain and Multimodal Data (Bezirganyan et al., SIGIR 2025,
arXiv:2406.09864): spoken class names paired with CIFAR images. Download, prepare, load.

Sources: the audio (`audio/datalist.csv` with `path,label,tts_label`, WAVs under `audio/`) from the
Hugging Face dataset bezirganyan/LUMA; images from CIFAR-10 and CIFAR-100 (the python tarballs of
the CIFAR site); the published `split_indices/*.txt` of github.com/bezirganyan/LUMA, which say which
rows form the clean training set (500 per class) and the test set (100 per class).

Which LUMA this is: the public release's 42 in-distribution classes, built by applying the published
split indices directly (the authors' compile script also downloads pretrained weights and adds image
noise unconditionally; we do neither). Image rows are numbered as that script numbers them: CIFAR-10
then CIFAR-100 training images (test images for the test indices), kept when their class — with
LUMA's renames (aquarium_fish → fish, pickup_truck → truck, oak_tree → oak, rose → roses, pine_tree →
pine, palm_tree → palm) — is one of the 50 LUMA classes (for the test set: one of the 42). Each
class's audio clips and images are shuffled and paired (fixed seed); 100 of each class's 500 training
pairs are held out for validation: 16,800 / 4,200 / 4,200 pairs. The MILES paper instead built a
balanced 22-class set of 1,500 pairs per class (25,000 / 4,000 / 4,000) whose selection is not
published, so its numbers are not directly comparable with this set.

Preprocessing (the paper's shapes): audio resampled to 16 kHz, a log mel spectrogram with 96 mel
bands (64 ms windows, 10 ms hop) of the whole clip, resized to 1×96×96 (stored float16); images
32×32 → 3×96×96 bilinear (stored uint8). ResNet-6 encoders, 60 epochs.
"""
from __future__ import annotations

import csv
import codecs
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import prepare as common
from .registry import SPLITS, MultimodalDataset, register
from .download import download, md5sum
from ..errors import UserError

NAME = "luma"
TITLE = "LUMA (Bezirganyan et al. 2025)"
# LUMA's class numbering (its compile script); classes 0–41 are in-distribution, 42–49 OOD.
CLASSES = ("man", "boy", "house", "woman", "girl", "table", "road", "horse", "dog", "ship", "bird", "mountain",
           "bed", "train", "bridge", "fish", "cloud", "chair", "cat", "baby", "castle", "forest", "television",
           "bear", "camel", "sea", "fox", "plain", "bus", "snake", "lamp", "clock", "lion", "tank", "palm",
           "rabbit", "pine", "cattle", "oak", "mouse", "frog", "ray", "bicycle", "truck", "elephant", "roses",
           "wolf", "telephone", "bee", "whale")
IN_DISTRIBUTION = 42
RENAMES = {"aquarium_fish": "fish", "pickup_truck": "truck", "oak_tree": "oak", "rose": "roses",
           "pine_tree": "pine", "palm_tree": "palm"}
CIFAR = {  # tarball name → (url, md5 published on the CIFAR page, folder inside)
    "cifar-10-python.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                               "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar-100-python.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python")}
HF = "https://huggingface.co/datasets/bezirganyan/LUMA/resolve/main"
SPLIT_URL = "https://raw.githubusercontent.com/bezirganyan/LUMA/main/split_indices"
SPLIT_FILES = ("audio_train_clean.txt", "audio_test.txt", "image_train_clean.txt", "image_test.txt")
VAL_FRACTION = 0.2  # 100 of each class's 500 training pairs
SIZE = 96
RATE = 16000
LICENCE = ("CC BY-SA 4.0 (LUMA; audio from Common Voice CC0, LibriSpeech CC BY 4.0, Spoken Wikipedia CC BY-SA "
           "4.0); images from CIFAR-10/100 (Krizhevsky 2009)")
CITATION = ("G. Bezirganyan, S. Sellami, L. Berti-Équille, S. Fournier, \"LUMA: A Benchmark Dataset for Learning "
            "from Uncertain and Multimodal Data\", SIGIR 2025, arXiv:2406.09864; A. Krizhevsky, \"Learning Multiple "
            "Layers of Features from Tiny Images\", 2009.")
SCRIPT = "python data_scripts/luma.py"
LAYOUT = common.Layout({"audio": ((1, SIZE, SIZE), "float16"), "image": ((3, SIZE, SIZE), "uint8")}, IN_DISTRIBUTION,
                       row_id="audio_row")


def root() -> Path:
    return common.root(NAME)


def is_prepared(folder: Path | None = None) -> bool:
    return common.is_prepared(folder or root())


def _datalist(raw: Path) -> list[dict]:
    path = raw / "audio" / "datalist.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        raise UserError(f"cannot read {path} ({error}); re-run {SCRIPT}") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise UserError(f"{path} is not LUMA's audio list (columns path,label,tts_label); re-run {SCRIPT}")
    return rows


def _indices(raw: Path, name: str) -> np.ndarray:
    path = raw / "split_indices" / name
    try:
        index = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as error:
        raise common.damaged(path, f"not a list of row numbers: {error}", SCRIPT) from None
    if index.min(initial=0) < 0:  # numpy would count it from the end: a silently wrong row
        raise common.damaged(path, f"a negative row number ({index.min()})", SCRIPT)
    return index


def _past_the_end(raw: Path, name: str, index: np.ndarray, rows: int, what: str) -> None:
    """Refuse an index file naming a row past the `rows` rows of `what` it numbers."""
    if index.max(initial=-1) >= rows:
        raise common.damaged(raw / "split_indices" / name, f"it names row {index.max()}, past the {rows} rows of {what} "
                             "(an index file of another LUMA release?)", SCRIPT)


def fetch(folder: Path, source: Path | None = None, progress: bool = True) -> dict:
    """Put the CIFAR tarballs, LUMA's split indices, `audio/datalist.csv` and the WAVs the splits use
    in `folder/raw`: copied from `source` (laid out the same way) or downloaded. The CIFAR tarballs'
    md5s are checked either way; returns the source and how each file was verified."""
    raw = Path(folder) / "raw"
    unchecked = {"split_indices/*.txt": "no checksum published; parsed while preparing",
                 "audio/datalist.csv": "no checksum published; parsed while preparing",
                 "audio/**/*.wav": "the Hub publishes no checksum list; every clip used decoded while preparing"}
    fixed = [*CIFAR, *[f"split_indices/{n}" for n in SPLIT_FILES], "audio/datalist.csv"]
    if source is not None:
        common.copy_from(source, raw, common.without_copies(source, fixed),
                         "the CIFAR tarballs, LUMA's split_indices/ and audio/datalist.csv")
        needed = _needed_audio(raw)
        common.copy_from(source, raw, needed, "LUMA audio clips listed in audio/datalist.csv")
        verified = {name: _cifar_md5(raw / name, md5) for name, (_, md5, _) in CIFAR.items()}
        verified.update({name: f"{common.FROM_UNCHECKED} ({how})" for name, how in unchecked.items()})
        return {"source": str(source), "verified": verified, common.RAW_FILES: fixed + needed}
    for name, (url, md5, _) in CIFAR.items():
        download(url, raw / name, md5=md5, progress=progress)
    for name in SPLIT_FILES:
        download(f"{SPLIT_URL}/{name}", raw / "split_indices" / name, progress=False)
    download(f"{HF}/audio/datalist.csv", raw / "audio" / "datalist.csv", progress=False)
    needed = _needed_audio(raw)
    print(f"downloading {len(needed)} audio clips (~1 GB) into {raw / 'audio'}")
    for name in tqdm(needed, desc="LUMA audio", disable=not progress):
        download(f"{HF}/{name}", raw / name, progress=False)
    verified = {name: f"md5 {md5} from the CIFAR page" for name, (_, md5, _) in CIFAR.items()}
    verified.update({name: f"downloaded, {how}" for name, how in unchecked.items()})
    return {"source": "CIFAR site, huggingface.co/datasets/bezirganyan/LUMA, github.com/bezirganyan/LUMA",
            "verified": verified, common.RAW_FILES: fixed + needed}


def _cifar_md5(path: Path, published: str) -> str:
    """How a CIFAR tarball copied with --from was verified: its md5 against the CIFAR page's. Another
    md5 is reported, not refused — a repacked archive can hold the same images — and every image is
    read while preparing."""
    actual = md5sum(path)
    if actual == published:
        return f"{common.FROM}, md5 {published} from the CIFAR page"
    print(f"note: {path.name} has md5 {actual}, not the CIFAR page's {published}: not the published archive; "
          "its images are used as they are")
    return f"{common.FROM}; md5 {actual} is NOT the CIFAR page's {published}"


def _needed_audio(raw: Path) -> list[str]:
    rows = _datalist(raw)
    needed = set()
    for name in ("audio_train_clean.txt", "audio_test.txt"):
        index = _indices(raw, name)
        _past_the_end(raw, name, index, len(rows), raw / "audio" / "datalist.csv")
        needed |= {f"audio/{rows[i]['path']}" for i in index}
    return sorted(needed)


def _class_of(raw: Path, rows: list[dict], row: int) -> int:
    """LUMA's class number of an audio row, or a UserError naming the row, its label and the classes."""
    label, path = rows[row]["label"], raw / "audio" / "datalist.csv"
    if label not in CLASSES:
        raise UserError(f"{path}: row {row} (line {row + 2}) has label {label!r}, not one of LUMA's classes "
                        f"({', '.join(CLASSES)}); {common.remedy(path, SCRIPT)}")
    return CLASSES.index(label)


def _latin1(text: str, encoding: str) -> bytes:
    """`_codecs.encode` as protocol-2 pickles of bytes use it, and nothing more: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it asks for _codecs.encode with {encoding!r}: refused, nothing of it was run")
    return codecs.encode(text, "latin1")


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR's python batches that admits only what they hold — numpy arrays (rebuilt
    through `_reconstruct`, under numpy 1's and numpy 2's module names), dtypes, and the dicts, lists,
    strings and ints pickle builds by itself, and `_codecs.encode`, with which Python 3 writes bytes at
    protocol 2 (a re-pickled batch, like our test fixtures; it only encodes a string) — so a crafted file
    cannot name a function that does anything else."""
    _reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): lambda text, encoding: _latin1(text, encoding)}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds "
                                         "(a crafted file?): refused, nothing of it was run")
        return self.ALLOWED[module, name]


def _unpickle(tar: tarfile.TarFile, member: str, keys: dict[str, type | tuple[type, ...]]) -> dict:
    """A member of a CIFAR tarball: a dict holding `keys` (each of its type), or a one-line error naming
    the tarball and the member."""
    try:  # written by Python 2: latin1 turns its byte strings back into what was pickled
        content = _ArraysOnly(tar.extractfile(member), encoding="latin1").load()
    except (EOFError, OSError, zlib.error, tarfile.TarError, KeyError, pickle.UnpicklingError,
            ValueError, TypeError, IndexError, AttributeError, OverflowError) as error:
        # Damaged bytes make the unpickler fail in many ways (pickle's docs); each means the same here.
        raise common.damaged(tar.name, f"{member} is missing or unreadable: {error}", SCRIPT) from None
    for key, kind in keys.items():
        if not isinstance(content, dict) or not isinstance(content.get(key), kind):
            raise common.damaged(tar.name, f"{member} holds no {key!r} (a list or array in every CIFAR python "
                                           "release)", SCRIPT)
    return content


def _batch(tar: tarfile.TarFile, member: str, key: str, label_names: list) -> tuple[np.ndarray, list[int]]:
    """The (N, 32, 32, 3) images and the class numbers of a CIFAR batch, checked: a damaged batch gives
    a one-line error, never a wrong image."""
    batch = _unpickle(tar, member, {"data": np.ndarray, key: (list, np.ndarray)})
    data, labels = batch["data"], list(batch[key])
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
        raise common.damaged(tar.name, f"{member} holds images of shape {data.shape} with {len(labels)} labels, "
                                       "expected (N, 3072) with N labels", SCRIPT)
    if not all(isinstance(label, (int, np.integer)) and 0 <= label < len(label_names) for label in labels):
        raise common.damaged(tar.name, f"{member} holds {key} outside 0–{len(label_names) - 1}", SCRIPT)
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar_images(raw: Path, part: str) -> tuple[np.ndarray, list[str]]:
    """CIFAR-10 then CIFAR-100 images of `part` ("train" or "test") as (N, 32, 32, 3) uint8, with
    their class names after LUMA's renames, in the order LUMA's compile script numbers them."""
    images, names = [], []
    for tarball, (_, md5, inner) in CIFAR.items():
        path = raw / tarball
        try:
            tar = tarfile.open(path, "r:gz")  # the python releases are gzipped: one error, not one per method
        except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
            raise common.damaged(path, error, SCRIPT) from None
        with tar:
            if inner == "cifar-10-batches-py":
                meta, names_key = f"{inner}/batches.meta", "label_names"
                members = [f"data_batch_{i}" for i in range(1, 6)] if part == "train" else ["test_batch"]
                key = "labels"
            else:
                meta, names_key = f"{inner}/meta", "fine_label_names"
                members, key = [part], "fine_labels"
            label_names = _unpickle(tar, meta, {names_key: list})[names_key]
            for member in members:
                data, labels = _batch(tar, f"{inner}/{member}", key, label_names)
                images.append(data)
                names += [RENAMES.get(label_names[i], label_names[i]) for i in labels]
    return np.concatenate(images), names


_MEL = None


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(1, 96, 96) log mel spectrogram (96 bands, 64 ms windows, 10 ms hop) of 16 kHz audio, resized.
    The window is 1024 samples because 96 mel bands need that many frequency bins to be non-empty."""
    global _MEL
    if _MEL is None:
        import torchaudio
        _MEL = torchaudio.transforms.MelSpectrogram(sample_rate=RATE, n_fft=1024, hop_length=160, n_mels=SIZE)
    samples = common.fit_length(samples, max(len(samples), 1024))  # at least one window
    spectrum = torch.log(_MEL(torch.from_numpy(samples)) + 1e-6).numpy()
    return common.resize(spectrum, (SIZE, SIZE))[None]


def build(raw: Path, seed: int = 0, progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """The paired arrays from the raw files (see the module docstring)."""
    raw = Path(raw)
    rng = np.random.default_rng(seed)
    rows = _datalist(raw)
    audio_pool = {}  # checked first: a bad label is found before the CIFAR tarballs are read
    for part, index_file in (("train", "audio_train_clean.txt"), ("test", "audio_test.txt")):
        index = _indices(raw, index_file)
        audio_pool[part] = (index, np.array([_class_of(raw, rows, i) for i in index], dtype=np.int64))
    image_pool = {}
    for part, index_file, allowed in (("train", "image_train_clean.txt", CLASSES),
                                      ("test", "image_test.txt", CLASSES[:IN_DISTRIBUTION])):
        images, names = cifar_images(raw, part)
        keep = [i for i, n in enumerate(names) if n in allowed]  # the compile script's row numbering
        index = _indices(raw, index_file)
        _past_the_end(raw, index_file, index, len(keep), f"the {part} images of LUMA classes in the CIFAR tarballs")
        chosen = np.array(keep)[index]
        image_pool[part] = (images[chosen], np.array([CLASSES.index(names[i]) for i in chosen]))

    out, pairs = {}, {"train": [], "val": [], "test": []}
    for part in ("train", "test"):
        for c in range(IN_DISTRIBUTION):
            audio_rows = rng.permutation(audio_pool[part][0][audio_pool[part][1] == c])
            image_rows = rng.permutation(np.flatnonzero(image_pool[part][1] == c))
            n = min(len(audio_rows), len(image_rows))
            if n == 0:
                raise UserError(f"LUMA class {CLASSES[c]!r} has no {part} audio or image: incomplete files? "
                                f"Re-run {SCRIPT}")
            matched = list(zip(audio_rows[:n], image_rows[:n], [c] * n))
            if part == "train":
                n_val = round(VAL_FRACTION * n)
                pairs["val"] += matched[:n_val]
                pairs["train"] += matched[n_val:]
            else:
                pairs["test"] += matched
    for split in SPLITS:
        image_source = image_pool["test" if split == "test" else "train"][0]
        n = len(pairs[split])
        audio = np.empty((n, 1, SIZE, SIZE), dtype=np.float16)
        image = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
        for k, (audio_row, image_row, _) in enumerate(tqdm(pairs[split], desc=f"LUMA {split}", disable=not progress)):
            audio[k] = common.audio_feature(raw / "audio" / rows[audio_row]["path"], SCRIPT, RATE, log_mel)
            picture = image_source[image_row].transpose(2, 0, 1)
            image[k] = np.clip(np.rint(common.resize(picture, (SIZE, SIZE))), 0, 255)
        out.update({f"{split}_audio": audio, f"{split}_image": image,
                    f"{split}_labels": np.array([c for _, _, c in pairs[split]], dtype=np.int64),
                    f"{split}_audio_row": np.array([a for a, _, _ in pairs[split]], dtype=np.int64)})
    stats = {m: common.standardize_stats(out[f"train_{m}"]) for m in ("audio", "image")}
    return out, {"normalize": stats}


def prepare(folder: Path | None = None, source: Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Fetch (or copy) the files, build the pairs, write them and only then the marker."""
    folder = Path(folder or root())
    return common.run("LUMA", folder, lambda: fetch(folder, source, progress),
                      lambda: build(folder / "raw", seed, progress), LAYOUT, SCRIPT, {"seed": seed})


@register(NAME, ("audio", "image"), "LUMA: spoken class names + CIFAR images, 42 classes",
          prepared=is_prepared, data_script=SCRIPT,
          protocol={"encoder": "resnet6", "epochs": 60, "batch_size": 64})
def load_luma(folder: Path | None = None) -> MultimodalDataset:
    """The prepared LUMA pairs: audio 1×96×96 log mel spectrograms, image 3×96×96, 42 classes."""
    arrays, marker = common.read(folder or root(), NAME, SCRIPT)
    return MultimodalDataset(NAME, ("audio", "image"), IN_DISTRIBUTION, common.splits_from(arrays, ("audio", "image")),
                             normalize={m: tuple(v) for m, v in marker["normalize"].items()},
                             description="LUMA, 42 classes (public split indices), spoken class names + CIFAR images")
