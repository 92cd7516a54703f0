"""The run folder's file writing (milesbook.atomic, milesbook.runs): a writer that fails half-way leaves
the old file whole."""
import pytest

from milesbook.atomic import atomic_write
from milesbook.runs import write_json


def test_atomic_write_leaves_the_old_file_whole_when_the_writer_fails(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("epoch,loss\n1,0.5\n")

    def half_then_fail(path):
        with open(path, "w") as f:
            f.write("epoch,loss\n1,0.5\n2,0.")  # a row cut in the middle
            f.flush()
            raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "epoch,loss\n1,0.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]  # no temporary file left behind


def test_atomic_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    write_json(target, {"epochs": 1})
    write_json(target, {"epochs": 2})
    assert target.read_text() == '{\n  "epochs": 2\n}\n'
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file this process makes, not mkstemp's 0600


def test_save_npz_keeps_the_name_and_leaves_no_temporary_file(tmp_path):
    import numpy as np

    from milesbook.atomic import save_npz
    save_npz(tmp_path / "prepared.npz", x=np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared.npz"]  # np.savez adds no second ".npz"
    assert np.load(tmp_path / "prepared.npz")["x"].tolist() == [0, 1, 2]
