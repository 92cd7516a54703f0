"""Issue 12: sources in their published formats (the fixtures), damaged on purpose. Each damaged input
must end the data script with exit code ≠ 0 and one line naming the file, no traceback and no
`prepared.json`; after the source is fixed, a re-run must succeed. Markers must say truthfully how
each source was verified."""
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from milesbook.datasets import cremad, luma, mmimdb, smnist
from milesbook.datasets import prepare as common
from milesbook.datasets.download import md5sum
from milesbook.errors import UserError

from .fixtures import CraftedPayload, write_cremad, write_flv, write_luma, write_mmimdb, write_smnist

PROGRESS = re.compile(r"^[^:]*: +\d+%\|")  # a tqdm bar on stderr, not a message
SMALL = (60, 20, 20)  # S-MNIST sizes the fixture can fill (its script asks for the paper's 8,000 / 2,000 / 2,000)


@pytest.fixture
def script(data_script):
    return data_script


def refused(result, name: str, culprit: Path, cache: Path) -> str:
    """Assert the script failed as the ground rules ask; returns its one error line."""
    code, out, err = result
    assert code not in (0, None), out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{name}: error: ") and str(culprit) in lines[0], lines[0]
    assert not (cache / name / "prepared.json").exists()
    return lines[0]


def succeeded(result, name: str, cache: Path) -> dict:
    code, out, err = result
    assert code == 0, err
    return json.loads((cache / name / "prepared.json").read_text())


def small_cremad(folder: Path) -> Path:
    return write_cremad(folder, actors=(1001, 1002), sentences=("IEO",))  # 12 clips and the known-bad one


def first_video_tag_only(data: bytes) -> bytes:
    """An FLV file cut right after its first video tag (type 9): only the first frame survives, as in a
    real clip cut to 2,000 bytes."""
    position = 9 + 4  # the FLV header and PreviousTagSize0
    while data[position] != 9:
        position += 11 + int.from_bytes(data[position + 1:position + 4], "big") + 4
    return data[:position + 11 + int.from_bytes(data[position + 1:position + 4], "big") + 4]


# 1. A truncated CREMA-D video: the middle frame, or a named damaged file — never the last frame decoded.

def _bar_column(frame: np.ndarray) -> int:
    return int(frame.astype(float).sum(2).mean(0).argmax())  # write_flv draws frame i's bar at column 4i mod 64


def test_middle_frame_is_the_first_frame_at_or_after_the_middle(tmp_path):
    clip = tmp_path / "clip.flv"
    write_flv(clip, (40, 200, 128), frames=39)  # 2.6 s at 15 fps: the middle, 1.3 s, is frame 20 (1.333 s)
    assert _bar_column(common.middle_frame(clip, "S")) == (4 * 20) % 64


@pytest.mark.parametrize("cut", ["30 %", "first frame"])
def test_truncated_video_is_damaged_not_its_last_frame(tmp_path, cut):
    clip = tmp_path / "clip.flv"
    write_flv(clip, (40, 200, 128), frames=39)
    data = clip.read_bytes()
    clip.write_bytes(data[:int(0.3 * len(data))] if cut == "30 %" else first_video_tag_only(data))
    with pytest.raises(UserError, match=r"clip.flv is truncated or damaged \(its frames stop at .* before the "
                                        r"middle \(1.30 s\) of the 2.60 s it states\)"):
        common.middle_frame(clip, "S")


def test_video_stating_no_length_is_damaged(tmp_path):
    """A truncated clip whose header states no duration (written to a stream that cannot seek back)."""
    import av

    class Unseekable:
        def __init__(self):
            self.data = bytearray()

        def write(self, block):
            self.data += bytes(block)
            return len(block)

    sink = Unseekable()
    with av.open(sink, "w", format="flv") as container:
        stream = container.add_stream("flv", rate=15)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(39):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 6 * i, np.uint8))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    clip = tmp_path / "clip.flv"
    clip.write_bytes(bytes(sink.data[:len(sink.data) * 3 // 10]))
    with pytest.raises(UserError, match="clip.flv is truncated or damaged .*states no duration or frame count"):
        common.middle_frame(clip, "S")


def test_cremad_script_refuses_a_truncated_video_then_prepares_once_fixed(tmp_path, cache, script):
    source = small_cremad(tmp_path / "CREMA-D")
    video = source / "VideoFlash" / "1002_IEO_FEA_XX.flv"
    whole = video.read_bytes()
    video.write_bytes(whole[:int(0.3 * len(whole))])
    line = refused(script("cremad", "--from", source), "cremad", video, cache)
    assert "truncated or damaged" in line and str(cache / "cremad" / "raw" / "VideoFlash" / video.name) in line
    video.write_bytes(whole)
    assert succeeded(script("cremad", "--from", source), "cremad", cache)["sizes"] == [8, 2, 2]


# 2. A missing CREMA-D WAV is named like a missing FLV; the known-bad clips are exempt.

@pytest.mark.parametrize("missing", ["AudioWAV/1002_IEO_SAD_HI.wav", "VideoFlash/1001_IEO_HAP_HI.flv"])
def test_cremad_missing_media_file_is_named(tmp_path, cache, script, missing):
    source = small_cremad(tmp_path / "CREMA-D")
    kept = (source / missing).read_bytes()
    (source / missing).unlink()
    (source / "AudioWAV" / "1076_MTI_SAD_XX.wav").unlink()  # a documented bad clip: not asked for
    refused(script("cremad", "--from", source), "cremad", source / missing, cache)
    (source / missing).write_bytes(kept)
    marker = succeeded(script("cremad", "--from", source), "cremad", cache)
    assert marker["sizes"] == [8, 2, 2] and marker["skipped"] == {}


# 3. LUMA: an unknown label in datalist.csv is one line naming the row, the label and the classes.

def test_luma_unknown_label_is_one_line(tmp_path, cache, script):
    source = write_luma(tmp_path / "LUMA", per_class=1, test_per_class=1)
    datalist = source / "audio" / "datalist.csv"
    good = datalist.read_text()
    lines = good.splitlines()
    row = int(np.loadtxt(source / "split_indices" / "audio_train_clean.txt", dtype=int)[3])
    path, _, spoken = lines[row + 1].split(",")  # line 0 is the header
    lines[row + 1] = f"{path},doggo,{spoken}"
    datalist.write_text("\n".join(lines) + "\n")
    line = refused(script("luma", "--from", source), "luma", cache / "luma" / "raw" / "audio" / "datalist.csv", cache)
    assert f"row {row} (line {row + 2}) has label 'doggo'" in line and "man, boy, house" in line
    datalist.write_text(good)
    assert succeeded(script("luma", "--from", source), "luma", cache)["sizes"] == [42, 0, 42]


# 4. Markers say truthfully how each source was verified, for every dataset.

def test_markers_record_how_each_source_was_verified(tmp_path, cache, monkeypatch):
    smnist.prepare(source=write_smnist(tmp_path / "s"), sizes=SMALL, progress=False)
    cremad.prepare(source=small_cremad(tmp_path / "c"), progress=False)
    mmimdb.prepare(source=write_mmimdb(tmp_path / "m", sizes=(6, 3, 3)), progress=False)
    markers = {name: json.loads((cache / name / "prepared.json").read_text())
               for name in ("smnist", "cremad", "mmimdb")}
    assert set(markers["smnist"]["verified"]) == set(smnist.FILES)
    assert set(markers["cremad"]["verified"]) == {"AudioWAV/*.wav", "VideoFlash/*.flv"}
    assert set(markers["mmimdb"]["verified"]) == {"mmimdb.tar.gz"}
    for marker in markers.values():
        assert all(how.startswith("copied from --from, no checksum checked") for how in marker["verified"].values())
        assert "checksums" not in marker and "md5" not in marker

    source = write_luma(tmp_path / "l", per_class=1, test_per_class=1)
    luma.prepare(source=source, progress=False)
    verified = json.loads((cache / "luma" / "prepared.json").read_text())["verified"]
    assert set(verified) == {*luma.CIFAR, "split_indices/*.txt", "audio/datalist.csv", "audio/**/*.wav"}
    published = luma.CIFAR["cifar-10-python.tar.gz"][1]
    assert f"is NOT the CIFAR page's {published}" in verified["cifar-10-python.tar.gz"]  # the fixture is not it
    # The same file with its md5 published: checked on --from, and recorded as checked.
    actual = md5sum(source / "cifar-10-python.tar.gz")
    url, _, inner = luma.CIFAR["cifar-10-python.tar.gz"]
    monkeypatch.setitem(luma.CIFAR, "cifar-10-python.tar.gz", (url, actual, inner))
    fetched = luma.fetch(tmp_path / "again", source, progress=False)
    assert fetched["verified"]["cifar-10-python.tar.gz"] == f"copied from --from, md5 {actual} from the CIFAR page"


# 5. MM-IMDb recovers from a damaged poster once the source is fixed, unpacked folder or archive.

def test_mmimdb_unpacked_source_recovers_after_a_damaged_poster(tmp_path, cache, script):
    source = write_mmimdb(tmp_path / "m", sizes=(6, 3, 3), tarball=False)
    poster = source / "mmimdb" / "dataset" / "0000002.jpeg"
    whole = poster.read_bytes()
    poster.write_bytes(whole[:len(whole) // 3])
    line = refused(script("mmimdb", "--from", source), "mmimdb", poster, cache)
    assert f"it is a copy of {poster}: replace that file" in line
    poster.write_bytes(whole)
    marker = succeeded(script("mmimdb", "--from", source), "mmimdb", cache)
    assert marker["sizes"] == [6, 3, 3] and list(marker["verified"]) == ["mmimdb/"]
    assert marker["verified"]["mmimdb/"].startswith("copied from --from, no checksum checked")


def test_mmimdb_archive_source_recovers_after_a_damaged_poster(tmp_path, cache, script):
    good = write_mmimdb(tmp_path / "good", sizes=(6, 3, 3))
    bad = write_mmimdb(tmp_path / "bad", sizes=(6, 3, 3), tarball=False)
    poster = bad / "mmimdb" / "dataset" / "0000002.jpeg"
    poster.write_bytes(poster.read_bytes()[:200])
    source = tmp_path / "source"
    source.mkdir()
    with tarfile.open(source / "mmimdb.tar.gz", "w:gz") as tar:
        tar.add(bad / "mmimdb", arcname="mmimdb")
    line = refused(script("mmimdb", "--from", source), "mmimdb", cache / "mmimdb" / "raw" / "mmimdb" / "dataset"
                   / "0000002.jpeg", cache)
    assert f"unpacked from {source / 'mmimdb.tar.gz'}: replace that archive" in line
    (source / "mmimdb.tar.gz").write_bytes((good / "mmimdb.tar.gz").read_bytes())
    assert succeeded(script("mmimdb", "--from", source), "mmimdb", cache)["sizes"] == [6, 3, 3]


def test_mmimdb_downloaded_archive_damage_names_the_folder_to_delete(tmp_path, cache, monkeypatch):
    """Unpacked from a downloaded archive: deleting the one damaged file restores nothing (the archive
    is not unpacked again), so the message names the folder; deleting that folder is enough."""
    archive = write_mmimdb(tmp_path / "archive.org", sizes=(6, 3, 3)) / "mmimdb.tar.gz"
    md5 = md5sum(archive)
    monkeypatch.setattr(mmimdb, "fetch_json", lambda url: {
        "files": [{"name": "mmimdb.tar.gz", "size": str(archive.stat().st_size), "md5": md5}], "metadata": {}})

    def download(url, dest, size, md5, progress):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, dest)
    monkeypatch.setattr(mmimdb, "download", download)
    raw = cache / "mmimdb" / "raw"
    mmimdb.fetch(cache / "mmimdb", progress=False)
    (raw / "mmimdb" / "dataset" / "0000004.jpeg").write_bytes(b"\xff\xd8 not a poster")
    with pytest.raises(UserError, match=f"0000004.jpeg is truncated or damaged .*; delete the folder "
                                        f"{raw / 'mmimdb'} and re-run"):
        mmimdb.prepare(progress=False)
    shutil.rmtree(raw / "mmimdb")
    mmimdb.prepare(progress=False)
    marker = json.loads((cache / "mmimdb" / "prepared.json").read_text())
    assert marker["sizes"] == [6, 3, 3]
    assert marker["verified"] == {"mmimdb.tar.gz": f"size and md5 {md5} from archive.org's metadata; unpacked, "
                                                   "every file used decoded"}


# The weaker messages.

def test_smnist_short_labels_name_the_labels_file(tmp_path, cache, script):
    source = write_smnist(tmp_path / "s")
    labels = np.load(source / "labels_train.npy")
    np.save(source / "labels_train.npy", labels[:-5])
    line = refused(script("smnist", "--from", source), "smnist", cache / "smnist" / "raw" / "labels_train.npy", cache)
    assert "115 rows where data_wr_train.npy and data_sp_train.npy have 120" in line
    assert f"it is a copy of {source / 'labels_train.npy'}" in line
    np.save(source / "labels_train.npy", labels)
    smnist.prepare(source=source, sizes=SMALL, progress=False)
    assert smnist.is_prepared()


def test_smnist_shape_error_names_the_file_with_its_path(tmp_path, cache):
    source = write_smnist(tmp_path / "s")
    np.save(source / "data_sp_test.npy", np.zeros((40, 500)))
    with pytest.raises(UserError, match=r"^" + str(cache / "smnist" / "raw" / "data_sp_test.npy").replace(".", r"\.")
                       + r" has shape \(40, 500\); expected \(40, 507\)"):
        smnist.prepare(source=source, sizes=SMALL, progress=False)


def test_smnist_fixed_source_of_the_same_size_is_copied_again(tmp_path, cache, script):
    source = write_smnist(tmp_path / "s")
    path = source / "data_wr_train.npy"
    whole = path.read_bytes()
    path.write_bytes(b"XXXXXX" + whole[6:])  # the NumPy magic overwritten: same size
    refused(script("smnist", "--from", source), "smnist", cache / "smnist" / "raw" / "data_wr_train.npy", cache)
    path.write_bytes(whole)
    smnist.prepare(source=source, sizes=SMALL, progress=False)
    assert smnist.is_prepared()


def test_cremad_fixed_source_of_the_same_size_is_copied_again(tmp_path, cache, script):
    source = small_cremad(tmp_path / "CREMA-D")
    wav = source / "AudioWAV" / "1001_IEO_DIS_HI.wav"
    whole = wav.read_bytes()
    wav.write_bytes(b"XXXX" + whole[4:])  # "RIFF" overwritten: same size
    refused(script("cremad", "--from", source), "cremad", cache / "cremad" / "raw" / "AudioWAV" / wav.name, cache)
    wav.write_bytes(whole)
    assert succeeded(script("cremad", "--from", source), "cremad", cache)["sizes"] == [8, 2, 2]


def test_cremad_git_lfs_pointer_says_git_lfs_pull(tmp_path, cache, script):
    source = small_cremad(tmp_path / "CREMA-D")
    wav = source / "AudioWAV" / "1002_IEO_NEU_XX.wav"
    whole = wav.read_bytes()
    wav.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                   "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 80044\n")
    raw_copy = cache / "cremad" / "raw" / "AudioWAV" / wav.name
    line = refused(script("cremad", "--from", source), "cremad", raw_copy, cache)
    assert "is a Git LFS pointer" in line and "git lfs pull" in line and f"the clone holding {wav}" in line
    wav.write_bytes(whole)
    assert succeeded(script("cremad", "--from", source), "cremad", cache)["sizes"] == [8, 2, 2]


def test_luma_garbage_cifar_tarball_is_one_line(tmp_path, cache, script):
    source = write_luma(tmp_path / "LUMA", per_class=1, test_per_class=1)
    tarball = source / "cifar-10-python.tar.gz"
    whole = tarball.read_bytes()
    tarball.write_bytes(np.random.default_rng(0).bytes(5000))
    line = refused(script("luma", "--from", source), "luma", tarball, cache)
    assert "not a gzip file" in line
    tarball.write_bytes(whole)
    assert succeeded(script("luma", "--from", source), "luma", cache)["sizes"] == [42, 0, 42]


def test_smnist_non_finite_values_are_damage(tmp_path, cache, script):
    source = write_smnist(tmp_path / "s")
    good = np.load(source / "data_sp_train.npy")
    np.save(source / "data_sp_train.npy", np.full_like(good, np.nan))
    refused(script("smnist", "--from", source), "smnist", cache / "smnist" / "raw" / "data_sp_train.npy", cache)
    with pytest.raises(UserError, match="data_sp_train.npy is truncated or damaged \\(non-finite values"):
        smnist.prepare(source=source, sizes=SMALL, progress=False)
    np.save(source / "data_sp_train.npy", good)
    smnist.prepare(source=source, sizes=SMALL, progress=False)
    assert smnist.is_prepared()


def test_smnist_too_small_gives_the_counts_found(tmp_path, cache, script):
    source = write_smnist(tmp_path / "s")
    line = refused(script("smnist", "--from", source), "smnist", cache / "smnist" / "raw", cache)
    assert "too small for (8000, 2000, 2000) samples" in line
    assert "120 training rows (needs 10000) and 40 test rows (needs 2000)" in line


def test_luma_crafted_pickle_in_a_from_tarball_runs_nothing(tmp_path, cache, script):
    import io
    import pickle
    import tarfile
    source = write_luma(tmp_path / "LUMA", per_class=1, test_per_class=1)
    tarball = source / "cifar-10-python.tar.gz"
    whole = tarball.read_bytes()
    marker = tmp_path / "payload-ran"
    with tarfile.open(fileobj=io.BytesIO(whole), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["cifar-10-batches-py/data_batch_1"] = pickle.dumps({"data": CraftedPayload(marker), "labels": [0]},
                                                               protocol=2)
    with tarfile.open(tarball, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    line = refused(script("luma", "--from", source), "luma", "cifar-10-python.tar.gz", cache)
    assert "data_batch_1" in line and "posix.system" in line and "refused, nothing of it was run" in line
    assert not marker.exists()
    tarball.write_bytes(whole)  # the fixture's own batches (not the published bytes) still prepare
    assert succeeded(script("luma", "--from", source), "luma", cache)["sizes"] == [42, 0, 42]
    assert not marker.exists()


def test_a_crafted_checkpoint_in_a_run_folder_runs_nothing(tmp_path):
    import torch
    from .conftest import run_cli
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", "toy", "--epochs", "1", "--out", out).returncode == 0
    marker = tmp_path / "payload-ran"
    torch.save({"epoch": 1, "model": CraftedPayload(marker)}, out / "last.pt")
    done = run_cli("train", "--dataset", "toy", "--epochs", "2", "--out", out, "--resume")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "last.pt holds more than tensors and plain values" in done.stderr and "nothing of it was run" in done.stderr
    assert not marker.exists()
    # compare, which resumes by itself, refuses the same way
    done = run_cli("compare", "--dataset", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "2",
                   "--out", tmp_path / "cmp")
    assert done.returncode == 0
    folder = tmp_path / "cmp" / "vanilla-concat" / "seed0"
    (folder / "summary.json").unlink()
    torch.save({"epoch": 2, "model": CraftedPayload(marker)}, folder / "last.pt")
    done = run_cli("compare", "--dataset", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "3",
                   "--out", tmp_path / "cmp")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "nothing of it was run" in done.stderr
    assert not marker.exists()
