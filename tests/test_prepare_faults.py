"""Issues 12 and 28: sources in their published formats (the fixtures), damaged on purpose. Each damaged input
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


# Issue 28: the second sweep. Every damaged or odd input is one line naming the file; nothing is marked
# complete, and nothing already written is lost.

@pytest.fixture
def read_only(monkeypatch):
    """Call it with a folder to make that folder read-only, as a user who does not own it finds it (as
    root, chmod stops nothing): creating a file or folder inside it raises PermissionError."""
    import builtins
    import errno
    import io
    import os
    folders = []
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def refuse_inside(path):
        if isinstance(path, (str, bytes, os.PathLike)):
            path = Path(os.fsdecode(path)).absolute()
            if any(path == folder or folder in path.parents for folder in folders):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def open_(file, mode="r", *args, **kwargs):
        if set(mode) & set("wax+"):
            refuse_inside(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse_inside(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        refuse_inside(path)
        return real_mkdir(path, *args, **kwargs)
    for module, name, replacement in ((builtins, "open", open_), (io, "open", open_), (os, "open", os_open),
                                      (os, "mkdir", mkdir)):
        monkeypatch.setattr(module, name, replacement)
    return lambda folder: folders.append(Path(folder).absolute())


SMALL_SOURCES = {"smnist": write_smnist, "cremad": small_cremad, "mmimdb": lambda folder: write_mmimdb(folder, (6, 3, 3)),
                 "luma": lambda folder: write_luma(folder, per_class=1, test_per_class=1)}


@pytest.mark.parametrize("name", list(SMALL_SOURCES))
def test_a_read_only_cache_is_named_up_front(tmp_path, cache, script, read_only, name):
    source = SMALL_SOURCES[name](tmp_path / name)
    cache.mkdir()
    read_only(cache)
    line = refused(script(name, "--from", source), name, cache / name, cache)
    assert "cannot write in" in line and "Permission denied" in line
    assert "--out DIR" in line and "MILESBOOK_CACHE=DIR" in line
    assert list(cache.iterdir()) == []


def test_a_read_only_out_folder_is_named_and_a_prepared_one_still_reads(tmp_path, cache, script, read_only):
    source = write_mmimdb(tmp_path / "m", sizes=(6, 3, 3))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    read_only(out)
    code, _, err = script("mmimdb", "--from", source, "--out", out)
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"mmimdb: error: cannot write in {out} (Permission denied)")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # A prepared folder needs no write access: the script says so, and the loader reads it.
    prepared = tmp_path / "prepared"
    assert script("mmimdb", "--from", source, "--out", prepared)[0] == 0
    read_only(prepared)
    code, out_text, _ = script("mmimdb", "--from", source, "--out", prepared)
    assert code == 0 and f"already prepared in {prepared}" in out_text
    assert mmimdb.load_mmimdb(prepared).sizes() == {"train": 6, "val": 3, "test": 3}


def test_search_on_a_read_only_out_folder_is_one_line(tmp_path, capsys, read_only):
    from milesbook import cli
    out = tmp_path / "search"
    read_only(tmp_path)
    code = cli.main(["search", "--dataset", "toy", "--method", "vanilla", "--trials", "1", "--epochs", "1",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"milesbook: error: cannot write in {out} (Permission denied)")
    assert "choose another --out" in err and not out.exists()


def _repack(tarball: Path, member: str, change) -> None:
    """Rewrite one member of a tarball with `change(bytes) -> bytes`."""
    import io
    with tarfile.open(tarball, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members[member] = change(members[member])
    with tarfile.open(tarball, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _batch_edit(edit):
    """A `_repack` change that edits a CIFAR batch's dict and pickles it back as the CIFAR site does."""
    import pickle

    def change(blob: bytes) -> bytes:
        batch = pickle.loads(blob, encoding="latin1")
        edit(batch)
        return pickle.dumps(batch, protocol=2)
    return change


def _overwrite_every_997th_byte(blob: bytes) -> bytes:
    damaged = bytearray(blob)
    damaged[40::997] = b"\xff" * len(damaged[40::997])
    return bytes(damaged)


@pytest.mark.parametrize("change, said", [
    (_overwrite_every_997th_byte, "cifar-100-python/train is missing or unreadable: 'utf-8' codec can't decode"),
    (_batch_edit(lambda batch: batch.update(data=batch["data"][:, :3000])),
     "cifar-100-python/train holds images of shape (100, 3000) with 100 labels, expected (N, 3072)"),
    (_batch_edit(lambda batch: batch.pop("fine_labels")), "cifar-100-python/train holds no 'fine_labels'"),
    (_batch_edit(lambda batch: batch["fine_labels"].__setitem__(0, 100)), "holds fine_labels outside 0–99"),
], ids=["damaged bytes", "wrong shape", "missing key", "label out of range"])
def test_luma_damaged_cifar_batch_is_one_line(tmp_path, cache, script, change, said):
    source = write_luma(tmp_path / "LUMA", per_class=1, test_per_class=1)
    _repack(source / "cifar-100-python.tar.gz", "cifar-100-python/train", change)
    line = refused(script("luma", "--from", source), "luma", cache / "luma" / "raw" / "cifar-100-python.tar.gz", cache)
    assert said in line and f"it is a copy of {source / 'cifar-100-python.tar.gz'}: replace that file" in line
    assert (cache / "luma" / "raw" / "audio" / "datalist.csv").read_text() == \
        (source / "audio" / "datalist.csv").read_text()  # what was copied is kept for the re-run


@pytest.mark.parametrize("rows, said", [
    ("100000\n", "it names row 100000, past the 48 rows of the test images of LUMA classes in the CIFAR tarballs"),
    ("-1\n", "a negative row number (-1)")], ids=["past the end", "negative"])
def test_luma_bad_index_file_is_named_with_its_folder(tmp_path, cache, script, rows, said):
    source = write_luma(tmp_path / "LUMA", per_class=1, test_per_class=1)
    index = source / "split_indices" / "image_test.txt"
    index.write_text(index.read_text() + rows)
    line = refused(script("luma", "--from", source), "luma", cache / "luma" / "raw" / "split_indices" / index.name,
                   cache)
    assert said in line and "CIFAR python release" not in line and f"it is a copy of {index}" in line


def test_mmimdb_record_with_null_genres_is_named(tmp_path, cache, script):
    source = write_mmimdb(tmp_path / "m", sizes=(6, 3, 3), tarball=False)
    record = source / "mmimdb" / "dataset" / "0000005.json"
    good = record.read_text()
    record.write_text(json.dumps({**json.loads(good), "genres": None}))
    line = refused(script("mmimdb", "--from", source), "mmimdb", cache / "mmimdb" / "raw" / "mmimdb" / "dataset"
                   / record.name, cache)
    assert "its 'genres' is null, not a list of strings" in line and f"it is a copy of {record}" in line
    record.write_text(good)
    assert succeeded(script("mmimdb", "--from", source), "mmimdb", cache)["sizes"] == [6, 3, 3]


def test_mmimdb_without_an_archive_does_not_say_to_unpack_one(tmp_path, cache):
    """raw/mmimdb left by an earlier run, its archive gone: deleting the folder would not unpack anything."""
    raw = cache / "mmimdb" / "raw"
    shutil.copytree(write_mmimdb(tmp_path / "m", sizes=(6, 3, 3), tarball=False) / "mmimdb", raw / "mmimdb")
    (raw / "mmimdb" / "dataset" / "0000003.json").write_text("{not json")
    with pytest.raises(UserError) as error:
        mmimdb.prepare(progress=False)
    line = str(error.value)
    assert line.startswith(f"{raw / 'mmimdb' / 'dataset' / '0000003.json'} is truncated or damaged")
    assert "no archive is left to unpack it from" in line and "--from DIR" in line and "unpack the archive" not in line
    assert not (cache / "mmimdb" / "prepared.json").exists() and (raw / "mmimdb" / "split.json").exists()


def _write_float_wav(path: Path, samples: np.ndarray) -> None:
    from scipy.io import wavfile
    wavfile.write(path, 16000, samples.astype(np.float32))


@pytest.mark.parametrize("samples", ["NaN", "1e20"])
def test_cremad_wav_giving_a_non_finite_spectrogram_is_named(tmp_path, cache, script, samples):
    source = small_cremad(tmp_path / "CREMA-D")
    wav = source / "AudioWAV" / "1002_IEO_HAP_HI.wav"
    tone = np.sin(np.arange(16000) / 5)
    _write_float_wav(wav, np.where(np.arange(16000) % 100 == 0, np.nan, tone) if samples == "NaN" else tone * 1e20)
    line = refused(script("cremad", "--from", source), "cremad", cache / "cremad" / "raw" / "AudioWAV" / wav.name, cache)
    assert ("samples that are NaN or infinite" if samples == "NaN" else "NaN or infinite values") in line
    _write_float_wav(wav, 0.3 * tone)  # a float WAV in range prepares
    assert succeeded(script("cremad", "--from", source), "cremad", cache)["sizes"] == [8, 2, 2]


def test_prepared_arrays_are_checked_before_the_marker(tmp_path, cache, monkeypatch):
    """The shared check, whatever let a bad value through: NaN names its row's source; shapes and labels."""
    source = small_cremad(tmp_path / "CREMA-D")
    _write_float_wav(source / "AudioWAV" / "1001_IEO_SAD_HI.wav", np.zeros(16000))

    def unchecked_feature(path, script, rate, transform):  # a NaN the per-file check does not see
        feature = transform(common.read_wav(path, script, rate))
        return feature * np.float32(np.nan) if path.stem == "1001_IEO_SAD_HI" else feature
    monkeypatch.setattr(common, "audio_feature", unchecked_feature)
    with pytest.raises(UserError, match=r"^the prepared audio of clip 1001_IEO_SAD_HI \((train|val|test) row \d+\) "
                                        "holds NaN or infinite values"):
        cremad.prepare(source=source, progress=False)
    assert not cremad.is_prepared()
    arrays = {f"{s}_{k}": v for s in ("train", "val", "test") for k, v in
              {"x": np.zeros((2, 3), np.float32), "labels": np.array([0, 1]), "id": np.array([7, 8])}.items()}
    layout = common.Layout({"x": ((3,), "float32")}, classes=2, row_id="id")
    common.check_prepared(arrays, layout, "S")
    with pytest.raises(UserError, match=r"prepared val_labels \(int64 \(2,\)\) are not class ids 0–1"):
        common.check_prepared({**arrays, "val_labels": np.array([0, 2])}, layout, "S")
    with pytest.raises(UserError, match=r"prepared test_x is float64 \(2, 3\), expected float32 \(2, 3\)"):
        common.check_prepared({**arrays, "test_x": np.zeros((2, 3))}, layout, "S")
    with pytest.raises(UserError, match=r"^the prepared x of id 8 \(train row 1\) holds NaN or infinite values"):
        common.check_prepared({**arrays, "train_x": np.array([[0, 0, 0], [0, np.inf, 0]], np.float32)}, layout, "S")


def test_cremad_second_copy_is_named_and_left_out(tmp_path, cache, script):
    source = small_cremad(tmp_path / "CREMA-D")
    copy = source / "AudioWAV" / "1001_IEO_ANG_XX (1).wav"
    shutil.copyfile(source / "AudioWAV" / "1001_IEO_ANG_XX.wav", copy)
    code, _, err = script("cremad", "--from", source)
    assert code == 0, err
    warning, = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert warning.startswith(f"warning: ignoring AudioWAV/{copy.name} in {source}: a second copy")
    marker = json.loads((cache / "cremad" / "prepared.json").read_text())
    assert marker["sizes"] == [8, 2, 2] and not (cache / "cremad" / "raw" / "AudioWAV" / copy.name).exists()


def test_smnist_second_copy_is_named_and_left_out(tmp_path, cache, script):
    source = write_smnist(tmp_path / "s")
    (source / "labels_train (2).npy").write_bytes(b"<html>a second download</html>")
    code, _, err = script("smnist", "--from", source)  # fails for its size, after the warning
    assert code == 2
    warning, error = err.strip().splitlines()
    assert warning.startswith(f"warning: ignoring labels_train (2).npy in {source}") and "too small" in error


def test_cremad_unknown_emotion_names_the_file(tmp_path, cache, script):
    source = small_cremad(tmp_path / "CREMA-D")
    for sub, ext in (("AudioWAV", "wav"), ("VideoFlash", "flv")):
        shutil.copyfile(source / sub / f"1001_IEO_ANG_XX.{ext}", source / sub / f"1001_IEO_JOY_XX.{ext}")
    line = refused(script("cremad", "--from", source), "cremad", source / "AudioWAV" / "1001_IEO_JOY_XX.wav", cache)
    assert "emotion 'JOY' is not one of ANG, DIS, FEA, HAP, NEU, SAD; rename or remove it" in line
    assert not any((cache / "cremad" / "raw").iterdir())  # refused before anything was copied


def test_cremad_raw_files_of_an_earlier_preparation_are_not_read_then_removed(tmp_path, cache, script):
    """raw/ holds the clips of an earlier, bigger source (one of them damaged, one with an unknown
    emotion): a failed run keeps them; a complete run from the new source never reads them, then removes them."""
    earlier = write_cremad(tmp_path / "earlier", actors=(1001, 1002, 1003), sentences=("IEO",))
    stale = ["AudioWAV/1003_IEO_ANG_XX.wav", "VideoFlash/1003_IEO_ANG_XX.flv", "AudioWAV/1003_IEO_ZZZ_XX.wav"]
    common.copy_from(earlier, cache / "cremad" / "raw", stale[:2], "earlier media")
    raw = cache / "cremad" / "raw"
    (raw / stale[0]).write_bytes(b"RIFF damaged")
    (raw / stale[2]).write_bytes(b"RIFF unknown emotion")
    source = small_cremad(tmp_path / "CREMA-D")
    video = source / "VideoFlash" / "1002_IEO_FEA_XX.flv"
    whole = video.read_bytes()
    video.write_bytes(whole[:len(whole) // 3])
    refused(script("cremad", "--from", source), "cremad", raw / "VideoFlash" / video.name, cache)
    assert all((raw / name).exists() for name in stale)  # nothing removed by a run that did not complete
    video.write_bytes(whole)
    code, out, err = script("cremad", "--from", source)
    assert code == 0, err
    assert json.loads((cache / "cremad" / "prepared.json").read_text())["sizes"] == [8, 2, 2]
    assert "removed 3 file(s) left in" in out and not any((raw / name).exists() for name in stale)
    assert sorted(p.name for p in (raw / "AudioWAV").iterdir()) == sorted(p.name for p in (source / "AudioWAV").iterdir())


def test_smnist_html_page_does_not_suggest_allow_pickle(tmp_path, cache, script):
    source = write_smnist(tmp_path / "s")
    (source / "data_wr_test.npy").write_text("<!DOCTYPE html><html><body>429 Too Many Requests</body></html>")
    line = refused(script("smnist", "--from", source), "smnist", cache / "smnist" / "raw" / "data_wr_test.npy", cache)
    assert "not a NumPy .npy file: it starts with b'<!DOCTYPE html><' — a web page saved under the file's name" in line
    assert "pickle" not in line and f"it is a copy of {source / 'data_wr_test.npy'}: replace that file" in line
