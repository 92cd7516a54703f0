"""MM-IMDb — movie genre classification from plot and poster (Arevalo et al., "Gated Multimodal Units
for Information Fusion", ICLR 2017 workshop, arXiv:1702.01992). Multi-label. Download, prepare, load.

Source: `mmimdb.tar.gz` of archive.org/details/mmimdb (~8.1 GB), unpacking to `mmimdb/split.json`
(`{"train": [ids], "dev": [ids], "test": [ids]}`: 15,552 / 2,608 / 7,799 movies) and
`mmimdb/dataset/<id>.json` (IMDb fields, among them `plot`, a list of plot summaries, and `genres`) +
`mmimdb/dataset/<id>.jpeg` (the poster). The archive's own split is used as it is (dev = validation).

Prepared arrays: the poster as 3×256×160 (uint8; the layout of the authors' HDF5 release); the plot
(all summaries joined) as token ids, at most `max_tokens` = 512; labels as (N, 23) multi-hot over the 23
genres of the paper, in its order (genres outside them, e.g. News, are dropped). Token ids come from a
word vocabulary built on the training plots (lower-cased words seen at least twice, the 20,000 most
frequent; 0 = padding, 1 = unknown), for the `bow` text encoder — or, with `text_model=DIR` at load
time, from the tokenizer of a local pretrained BERT, for the `bert` encoder (the paper's BERT-base;
nothing is downloaded). Metric: micro-F1 (headline) and macro-F1 (`milesbook.metrics`).
Paper's protocol: BERT-base text encoder, ResNet-50 image encoder, 50 epochs.
"""
from __future__ import annotations

import json
import re
import shutil
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import prepare as common
from .registry import SPLITS, MultimodalDataset, register
from .download import download, fetch_json
from ..errors import UserError

NAME = "mmimdb"
TITLE = "MM-IMDb (Arevalo et al. 2017)"
GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
          "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
          "Musical", "Western", "Sport", "Short", "Film-Noir")
ARCHIVE = "mmimdb.tar.gz"
ARCHIVE_ITEM = "mmimdb"
POSTER = (256, 160)  # height, width
VOCABULARY = 20000
MAX_TOKENS = 512
LICENCE = ("research use; plots and posters are IMDb content (see the authors' page, "
           "lisi1.unal.edu.co/mmimdb) — the script prints the archive's own licence field when it downloads")
CITATION = ("J. Arevalo, T. Solorio, M. Montes-y-Gómez, F. A. González, \"Gated Multimodal Units for "
            "Information Fusion\", ICLR 2017 workshop, arXiv:1702.01992.")
SCRIPT = "python data_scripts/mmimdb.py"
UNPACKED = "unpacked.json"  # in raw/: which archive raw/mmimdb was unpacked from, and how it was verified


def root() -> Path:
    return common.root(NAME)


def is_prepared(folder: Path | None = None) -> bool:
    return common.is_prepared(folder or root())


def fetch(folder: Path, source: Path | None = None, progress: bool = True) -> dict:
    """Put the unpacked `mmimdb/` folder in `folder/raw`: from `source` (holding `mmimdb.tar.gz` or an
    unpacked `mmimdb/`) or downloaded from archive.org, verified against the item's md5 and size.
    Returns the source and how its files were verified. Every run with `source` copies again what
    changed there, so a re-run after fixing a source file picks it up."""
    raw = Path(folder) / "raw"
    if source is not None and (Path(source) / "mmimdb" / "split.json").exists():
        names = [str(p.relative_to(source)) for p in (Path(source) / "mmimdb").rglob("*") if p.is_file()]
        names = common.without_copies(source, names)
        (raw / UNPACKED).unlink(missing_ok=True)  # raw/mmimdb no longer holds one archive's contents
        common.copy_from(source, raw, names, "the unpacked MM-IMDb archive")
        how = f"{common.FROM_UNCHECKED} (none is published for single files); every file used decoded"
        return {"source": str(source), "verified": {"mmimdb/": how}, common.RAW_FILES: names}
    if source is not None:
        common.copy_from(source, raw, [ARCHIVE], "MM-IMDb's mmimdb.tar.gz or its unpacked mmimdb/ folder")
        checked = {"source": str(source), "verified": {
            ARCHIVE: f"{common.FROM_UNCHECKED} (archive.org's md5 needs the network); unpacked, every file used "
                     "decoded"}}
        origin = str(Path(source) / ARCHIVE)
    else:
        unpacked = _unpacked(raw)
        if unpacked is not None and (not (raw / ARCHIVE).exists() or unpacked["archive"] == _stat(raw / ARCHIVE)):
            return unpacked["checked"]  # verified when unpacked (the archive may since be deleted, to save space)
        if unpacked is None and (raw / "mmimdb" / "split.json").exists() and not (raw / ARCHIVE).exists():
            return {"source": f"{raw / 'mmimdb'}, left by an earlier run", "verified": {
                "mmimdb/": "not recorded (copied with --from or unpacked by an earlier version); every file used "
                           "decoded"}, common.RAW_FILES: ["mmimdb"]}
        meta = fetch_json(f"https://archive.org/metadata/{ARCHIVE_ITEM}")
        info = next(f for f in meta["files"] if f["name"] == ARCHIVE)
        print(f"MM-IMDb licence (archive.org item): {meta.get('metadata', {}).get('licenseurl', 'not stated')}")
        print(f"downloading {ARCHIVE}, {int(info['size']) / 1e9:.1f} GB, into {raw}")
        download(f"https://archive.org/download/{ARCHIVE_ITEM}/{ARCHIVE}", raw / ARCHIVE, int(info["size"]),
                 info["md5"], progress)
        checked = {"source": f"archive.org/details/{ARCHIVE_ITEM}", "verified": {
            ARCHIVE: f"size and md5 {info['md5']} from archive.org's metadata; unpacked, every file used decoded"}}
        origin = None
    unpacked = _unpacked(raw)
    if unpacked is None or unpacked["archive"] != _stat(raw / ARCHIVE):
        _unpack(raw)
        record = {"archive": _stat(raw / ARCHIVE), "origin": origin, "checked": checked}
        (raw / UNPACKED).write_text(json.dumps(record))
    return {**checked, common.RAW_FILES: [ARCHIVE, UNPACKED, "mmimdb"]}


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _unpacked(raw: Path) -> dict | None:
    """The record of the archive `raw/mmimdb` was unpacked from, if it holds one archive's contents."""
    try:
        record = json.loads((raw / UNPACKED).read_text())
    except (OSError, ValueError):
        return None
    return record if (raw / "mmimdb" / "split.json").exists() else None


def _unpack(raw: Path) -> None:
    """Unpack `raw/mmimdb.tar.gz` to `raw/mmimdb`, replacing what is there only once it is complete."""
    shutil.rmtree(raw / "unpacking", ignore_errors=True)
    try:
        with tarfile.open(raw / ARCHIVE, "r:gz") as tar:
            tar.extractall(raw / "unpacking", filter="data")
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        raise common.damaged(raw / ARCHIVE, error, SCRIPT) from None
    if not (raw / "unpacking" / "mmimdb" / "split.json").exists():
        raise UserError(f"{raw / ARCHIVE} holds no mmimdb/split.json: not the MM-IMDb archive; "
                        f"{common.remedy(raw / ARCHIVE, SCRIPT)}")
    (raw / UNPACKED).unlink(missing_ok=True)
    if (raw / "mmimdb").exists():
        shutil.rmtree(raw / "mmimdb")
    (raw / "unpacking" / "mmimdb").rename(raw / "mmimdb")  # only a complete unpacking gets the real name
    shutil.rmtree(raw / "unpacking", ignore_errors=True)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def build_vocabulary(texts, size: int = VOCABULARY, min_count: int = 2) -> dict[str, int]:
    """word → id (from 2; 0 is padding, 1 unknown): the `size` most frequent words seen `min_count` times."""
    counts = Counter(w for t in texts for w in words(t))
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))[:size]
    return {w: i + 2 for i, w in enumerate(kept)}


def word_ids(texts, vocabulary: dict[str, int], max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """(N, max_tokens) int32 word ids, 0-padded, 1 for words not in the vocabulary."""
    out = np.zeros((len(texts), max_tokens), dtype=np.int32)
    for i, text in enumerate(texts):
        ids = [vocabulary.get(w, 1) for w in words(text)][:max_tokens]
        out[i, :len(ids)] = ids
    return out


def _fix(path: Path) -> str:
    """What to do about a bad file of `raw/mmimdb` that was unpacked from an archive (a file copied from
    an unpacked --from folder is named by `common.damaged` itself): deleting one file restores nothing."""
    base = next(p for p in Path(path).parents if p.name == "mmimdb")
    record = _unpacked(base.parent) or {}
    if record.get("origin"):
        return (f"it was unpacked from {record['origin']}: replace that archive if the file is damaged there too, "
                f"else delete the folder {base}; then re-run {SCRIPT}")
    if (base.parent / ARCHIVE).exists():
        return f"delete the folder {base} and re-run {SCRIPT} to unpack the archive again"
    return (f"no archive is left to unpack it from: re-run {SCRIPT} with --from DIR holding a good mmimdb.tar.gz or "
            f"unpacked mmimdb/ folder, or delete the folder {base} and re-run it to download the archive (~8.1 GB)")


def _poster(path: Path) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((POSTER[1], POSTER[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as error:
        raise common.damaged(path, error, SCRIPT, _fix(path)) from None


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise common.damaged(path, error, SCRIPT, _fix(path)) from None


def _movie(path: Path) -> tuple[str, list[str]]:
    """A movie's plot (its summaries joined) and genres, from its record; a record whose fields are of
    another form (null genres, say) is damage, named."""
    movie = _json(path)
    plot = movie.get("plot") if isinstance(movie, dict) else None
    plot = [plot] if isinstance(plot, str) else plot or []
    genres = movie.get("genres") if isinstance(movie, dict) else None
    for field, value in (("plot", plot), ("genres", genres)):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise common.damaged(path, f"its {field!r} is {json.dumps(value)[:40]}, not a list of strings as in "
                                       "every MM-IMDb record", SCRIPT, _fix(path))
    return " ".join(plot), genres


def build(raw: Path, max_tokens: int = MAX_TOKENS, progress: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (and plots, vocabulary) from the unpacked archive (see the module docstring)."""
    base = Path(raw) / "mmimdb"
    split_ids = _json(base / "split.json")
    if not isinstance(split_ids, dict) or set(split_ids) != {"train", "dev", "test"} \
            or not all(isinstance(ids, list) for ids in split_ids.values()):
        raise common.damaged(base / "split.json", "it should map train, dev and test to lists of ids", SCRIPT,
                             _fix(base / "split.json"))
    arrays, plots = {}, {}
    for split, key in zip(SPLITS, ("train", "dev", "test")):
        ids = [str(i) for i in split_ids[key]]
        labels = np.zeros((len(ids), len(GENRES)), dtype=np.float32)
        images = np.empty((len(ids), 3, *POSTER), dtype=np.uint8)
        texts = []
        for k, movie_id in enumerate(tqdm(ids, desc=f"MM-IMDb {split}", disable=not progress)):
            plot, genres = _movie(base / "dataset" / f"{movie_id}.json")
            texts.append(plot)
            for genre in genres:
                if genre in GENRES:
                    labels[k, GENRES.index(genre)] = 1
            images[k] = _poster(base / "dataset" / f"{movie_id}.jpeg")
        arrays.update({f"{split}_image": images, f"{split}_labels": labels, f"{split}_id": np.array(ids)})
        plots[split] = texts
    vocabulary = build_vocabulary(plots["train"])
    for split in SPLITS:
        arrays[f"{split}_text"] = word_ids(plots[split], vocabulary, max_tokens)
    stats = {"image": common.standardize_stats(arrays["train_image"])}
    return arrays, {"plots": plots, "vocabulary": vocabulary, "normalize": stats, "max_tokens": max_tokens}


def prepare(folder: Path | None = None, source: Path | None = None, seed: int = 0, progress: bool = True,
            max_tokens: int = MAX_TOKENS) -> Path:
    """Fetch (or copy) and unpack the archive, build the arrays, write them (and the plots, for BERT
    tokenization at load time) and only then the marker. `seed` is unused: the split is the archive's."""
    folder = Path(folder or root())

    def build_and_keep_plots():
        arrays, extra = build(folder / "raw", max_tokens, progress)
        texts = {"plots": extra.pop("plots"), "vocabulary": extra.pop("vocabulary")}
        (folder / "plots.json").write_text(json.dumps(texts))  # read only once the marker exists
        return arrays, extra

    layout = common.Layout({"image": ((3, *POSTER), "uint8"), "text": ((max_tokens,), "int32")}, len(GENRES),
                           row_id="id", multilabel=True)
    return common.run("MM-IMDb", folder, lambda: fetch(folder, source, progress), build_and_keep_plots, layout,
                      SCRIPT, unit="movies")


def bert_ids(plots: dict[str, list[str]], text_model: str, max_tokens: int) -> tuple[dict[str, np.ndarray], dict]:
    """Token ids of each split's plots by the tokenizer saved with a local BERT, and the encoder
    options for it."""
    try:
        from transformers import AutoConfig, AutoTokenizer
    except ImportError:
        raise UserError("text_model needs Hugging Face transformers: pip install 'milesbook[text]'") from None
    if not (Path(text_model) / "config.json").is_file():
        raise UserError(f"no tokenizer or config in {text_model} (no config.json); give a folder saved by "
                        "save_pretrained (e.g. bert-base-uncased downloaded once by you)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(text_model), local_files_only=True)
        positions = AutoConfig.from_pretrained(str(text_model), local_files_only=True).max_position_embeddings
    except (OSError, ValueError) as error:
        raise UserError(f"no tokenizer or config in {text_model} ({error}); give a folder saved by "
                        "save_pretrained (e.g. bert-base-uncased downloaded once by you)") from None
    max_tokens = min(max_tokens, positions)  # BERT-base reads at most 512 positions
    ids = {split: tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_tokens,
                            return_tensors="np")["input_ids"].astype(np.int64) for split, texts in plots.items()}
    return ids, {"tokens": True, "kind": "bert", "path": str(text_model), "pad_id": tokenizer.pad_token_id,
                 "vocab_size": tokenizer.vocab_size}


@register(NAME, ("text", "image"), "MM-IMDb: movie genres (multi-label) from plot + poster",
          prepared=is_prepared, data_script=SCRIPT,
          protocol={"encoder": "image=resnet50,text=auto", "epochs": 50, "batch_size": 64})
def load_mmimdb(folder: Path | None = None, text_model: str | None = None) -> MultimodalDataset:
    """The prepared MM-IMDb: text (token ids), image 3×256×160, 23 genres, multi-label. With
    `text_model` (a local BERT folder) the plots are tokenized by its tokenizer and `--encoder auto`
    builds that BERT for the text; otherwise word ids and the bag-of-words encoder."""
    folder = Path(folder or root())
    arrays, marker = common.read(folder, NAME, SCRIPT)
    stored = json.loads((folder / "plots.json").read_text())
    text = {"tokens": True, "kind": "bow", "vocab_size": len(stored["vocabulary"]) + 2, "pad_id": 0}
    if text_model:
        ids, text = bert_ids(stored["plots"], text_model, marker["max_tokens"])
    else:
        ids = {split: arrays[f"{split}_text"].astype(np.int64) for split in SPLITS}
    arrays.update({f"{split}_text": ids[split] for split in SPLITS})
    return MultimodalDataset(NAME, ("text", "image"), len(GENRES), common.splits_from(arrays, ("text", "image")),
                             task="multilabel", normalize={"image": tuple(marker["normalize"]["image"])},
                             encoder_options={"text": text},
                             description=f"MM-IMDb (23 genres, multi-label), text by {text['kind']}, posters 256×160")
