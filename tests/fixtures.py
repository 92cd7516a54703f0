"""Tiny copies of the paper datasets in their exact on-disk formats (file names, dtypes, shapes per
sample, label encoding), for testing the data scripts and loaders without the real downloads; and
what a crafted pickle holds."""
from pathlib import Path

import numpy as np


def write_smnist(folder, n_train: int = 120, n_test: int = 40, seed: int = 0, pixel_dtype=np.float64) -> Path:
    """The six S-MNIST files: MNIST pixels (N, 784) in 0–255, spoken MFCCs (N, 507) standardized
    floats, labels (N,) 0–9, written/spoken rows paired by class. Pixels are class-dependent so a
    model can learn something."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n)
        pixels = rng.integers(0, 64, (n, 784)).astype(np.float64)
        pixels[np.arange(n), labels * 78] = 255.0
        mfcc = rng.standard_normal((n, 507))
        mfcc[:, :10] += np.eye(10)[labels] * 3
        np.save(folder / f"data_wr_{part}.npy", pixels.astype(pixel_dtype))
        np.save(folder / f"data_sp_{part}.npy", mfcc)
        np.save(folder / f"labels_{part}.npy", labels)
    return folder


def write_wav(path, samples: np.ndarray, rate: int = 16000) -> None:
    """16-bit PCM mono WAV (CREMA-D's and most LUMA clips' format)."""
    from scipy.io import wavfile
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, (np.clip(samples, -1, 1) * 32767).astype(np.int16))


def write_flv(path, colour, frames: int = 15, size=(64, 48), rate: int = 15) -> None:
    """A Flash Video file (FLV container, Sorenson H.263 'flv1' codec — CREMA-D's VideoFlash format)
    showing a solid colour with a moving bar."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as container:
        stream = container.add_stream("flv", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = np.empty((size[1], size[0], 3), np.uint8)
            image[:] = colour
            image[:, (4 * i) % size[0]] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_cremad(folder, actors=(1001, 1002, 1003, 1004), sentences=("IEO", "TIE"), seed: int = 0) -> Path:
    """A CREMA-D clone in miniature: AudioWAV/<clip>.wav (16 kHz PCM) and VideoFlash/<clip>.flv for
    every actor × sentence × emotion, named <actor>_<sentence>_<emotion>_<level>; the emotion sets the
    tone's pitch and the frame's colour. Also the known-bad clip 1076_MTI_SAD_XX, whose WAV is empty."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    emotions = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
    t = np.arange(16000) / 16000
    for actor in actors:
        for sentence in sentences:
            for k, emotion in enumerate(emotions):
                clip = f"{actor}_{sentence}_{emotion}_{'HI' if k % 2 else 'XX'}"
                tone = 0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t) + 0.05 * rng.standard_normal(len(t))
                write_wav(folder / "AudioWAV" / f"{clip}.wav", tone)
                write_flv(folder / "VideoFlash" / f"{clip}.flv", (40 * k, 255 - 40 * k, 128))
    write_wav(folder / "AudioWAV" / "1076_MTI_SAD_XX.wav", np.zeros(0))
    write_flv(folder / "VideoFlash" / "1076_MTI_SAD_XX.flv", (0, 0, 0))
    return folder


def _cifar_tarball(path, inner: str, files: dict) -> None:
    """A CIFAR python tarball: `inner/<name>` members pickled with protocol 2, as the real ones."""
    import io
    import pickle
    import tarfile
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            blob = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def write_luma(folder, per_class: int = 5, test_per_class: int = 2, seed: int = 0) -> Path:
    """LUMA's sources in miniature, in their formats: cifar-10-python.tar.gz and cifar-100-python.tar.gz
    (pickled dicts: 'data' (N, 3072) uint8 rows in CHW order, 'labels' / 'fine_labels', meta with
    'label_names' / 'fine_label_names'), audio/datalist.csv (path,label,tts_label) with WAVs at varied
    sample rates, and split_indices/*.txt numbering rows as LUMA's compile script does. Each class has
    its own image colour and its own tone."""
    from milesbook.datasets.luma import CLASSES, IN_DISTRIBUTION, RENAMES
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    inverse = {v: k for k, v in RENAMES.items()}
    c10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    c100 = [inverse.get(c, c) for c in CLASSES if c not in c10] + ["pickup_truck"]
    c100 += [f"other_{i}" for i in range(100 - len(c100))]

    def images(names, label_names, n):
        labels = [label_names.index(nm) for nm in names for _ in range(n)]
        data = rng.integers(0, 40, (len(labels), 3072)).astype(np.uint8)
        for row, lab in enumerate(labels):
            luma_class = CLASSES.index(RENAMES.get(label_names[lab], label_names[lab])) \
                if RENAMES.get(label_names[lab], label_names[lab]) in CLASSES else 0
            data[row, :1024] += np.uint8(4 * luma_class)  # the red plane tells the class
        return data, labels

    train10, lab10 = images(c10, c10, per_class + 1)
    test10, tlab10 = images(c10, c10, test_per_class + 1)
    folder.mkdir(parents=True, exist_ok=True)
    batches = np.array_split(np.arange(len(lab10)), 5)
    _cifar_tarball(folder / "cifar-10-python.tar.gz", "cifar-10-batches-py", {
        "batches.meta": {"label_names": c10},
        **{f"data_batch_{i + 1}": {"data": train10[b], "labels": [lab10[j] for j in b]} for i, b in enumerate(batches)},
        "test_batch": {"data": test10, "labels": tlab10}})
    train100, lab100 = images(c100, c100, per_class)
    test100, tlab100 = images(c100, c100, test_per_class)
    _cifar_tarball(folder / "cifar-100-python.tar.gz", "cifar-100-python", {
        "meta": {"fine_label_names": c100},
        "train": {"data": train100, "fine_labels": lab100}, "test": {"data": test100, "fine_labels": tlab100}})

    def luma_rows(names_10, labels_10, names_100, labels_100, allowed):
        named = [RENAMES.get(names_10[l], names_10[l]) for l in labels_10] + \
                [RENAMES.get(names_100[l], names_100[l]) for l in labels_100]
        return [n for n in named if n in allowed]

    (folder / "split_indices").mkdir(exist_ok=True)
    for part, (l10, l100), allowed, n in (("train_clean", (lab10, lab100), CLASSES, per_class),
                                          ("test", (tlab10, tlab100), CLASSES[:IN_DISTRIBUTION], test_per_class)):
        named = luma_rows(c10, l10, c100, l100, allowed)
        chosen = [i for c in CLASSES[:IN_DISTRIBUTION] for i in [k for k, nm in enumerate(named) if nm == c][:n]]
        np.savetxt(folder / "split_indices" / f"image_{part}.txt", rng.permutation(chosen), fmt="%d")

    rows = []
    for c, name in enumerate(CLASSES):
        for k in range(per_class + test_per_class + 1):
            path = f"{['cv_audio', 'ls_audio', 'sw_audio'][k % 3]}/{name}_{k}.wav"
            rate = (16000, 22050, 48000)[k % 3]
            tt = np.arange(int(0.25 * rate)) / rate
            write_wav(folder / "audio" / path, 0.3 * np.sin(2 * np.pi * (150 + 40 * c) * tt)
                      + 0.02 * rng.standard_normal(len(tt)), rate)
            rows.append((path, name, name))
    with open(folder / "audio" / "datalist.csv", "w") as f:
        f.write("path,label,tts_label\n" + "".join(f"{p},{l},{t}\n" for p, l, t in rows))
    labels = [r[1] for r in rows]
    train, test = [], []
    for c in CLASSES[:IN_DISTRIBUTION]:
        where = [i for i, l in enumerate(labels) if l == c]
        train += where[:per_class]
        test += where[per_class:per_class + test_per_class]
    np.savetxt(folder / "split_indices" / "audio_train_clean.txt", train, fmt="%d")
    np.savetxt(folder / "split_indices" / "audio_test.txt", test, fmt="%d")
    return folder


def write_mmimdb(folder, sizes=(40, 12, 12), tarball: bool = True, seed: int = 0) -> Path:
    """MM-IMDb's archive in miniature: mmimdb/split.json ({"train", "dev", "test"} id lists),
    mmimdb/dataset/<id>.json (IMDb fields incl. `plot` — a list of summaries — and `genres`, some outside
    the 23) and mmimdb/dataset/<id>.jpeg posters of varied sizes; packed as mmimdb.tar.gz when `tarball`.
    A movie's genres set its plot's words (a strong text) and its poster's tint (a weaker image)."""
    import json
    import tarfile

    from PIL import Image

    from milesbook.datasets.mmimdb import GENRES
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    base = folder / "mmimdb" / "dataset"
    base.mkdir(parents=True, exist_ok=True)
    split, next_id = {}, 1
    for key, n in zip(("train", "dev", "test"), sizes):
        split[key] = []
        for _ in range(n):
            movie_id = f"{next_id:07d}"
            next_id += 1
            genres = sorted(set(rng.choice(6, size=rng.integers(1, 3), replace=False).tolist()))
            names = [GENRES[g] for g in genres] + (["News"] if rng.random() < 0.2 else [])
            plot = [" ".join(["a", "story", "about"] + [f"{GENRES[g].lower()}ish" for g in genres]
                             + rng.choice(["love", "the", "city", "night", "war", "man"], 6).tolist()),
                    "Another summary of the same movie."]
            (base / f"{movie_id}.json").write_text(json.dumps({"title": f"Movie {movie_id}", "year": 1990,
                                                               "plot": plot, "genres": names}))
            poster = rng.integers(0, 80, (int(rng.integers(60, 90)), 40, 3)).astype(np.uint8)
            poster[..., 0] += np.uint8(25 * genres[0])
            Image.fromarray(poster).save(base / f"{movie_id}.jpeg", quality=90)
            split[key].append(movie_id)
    (folder / "mmimdb" / "split.json").write_text(json.dumps(split))
    if tarball:
        with tarfile.open(folder / "mmimdb.tar.gz", "w:gz") as tar:
            tar.add(folder / "mmimdb", arcname="mmimdb")
        import shutil
        shutil.rmtree(folder / "mmimdb")
    return folder


def write_tiny_bert(folder) -> Path:
    """A tiny randomly initialised BERT and its WordPiece tokenizer saved with save_pretrained — the
    on-disk layout of a downloaded bert-base-uncased, at a size a test can train."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from milesbook.datasets.mmimdb import GENRES
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "story", "about", "love", "the", "city", "night",
             "war", "man", "another", "summary", "of", "same", "movie", "."] + [f"{g.lower()}ish" for g in GENRES]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    import torch
    torch.manual_seed(0)  # deterministic weights
    BertModel(config).save_pretrained(folder)
    return folder


class CraftedPayload:
    """What a crafted pickle holds: a call to a shell command that creates `marker`, run by a plain
    `pickle.load` (or `torch.load(weights_only=False)`)."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))
