"""The command line: each user error is one clear line and a non-zero exit; the commands work."""
import json

import pytest

from milesbook import cli
from milesbook.datasets import registry as data_module
from milesbook.datasets.toy import load_toy

from .conftest import run_cli


@pytest.mark.parametrize("args,message", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'; choose one of: digits-av, toy, smnist"),
    (["--method", "ogm9"], "unknown method 'ogm9'; choose one of: vanilla, aux, miles, miles-lab, mses, mslr-k, mslr-s, mslr-d, ogm, "
                            "ogm-ge, gblend, mmpareto, pmr, mla, inforeg, aim-r, arl, remix, dgl, aug, unimodal-image, unimodal-audio"),
    (["--fusion", "late"], "unknown fusion 'late'; choose one of: concat, sum"),
    (["--tau", "1.5"], "tau must be in [0, 1]"),
    (["--tau", "-0.1"], "tau must be in [0, 1]"),
    (["--mu", "0"], "mu must be in (0, 1]"),
    (["--mu", "1.2"], "mu must be in (0, 1]"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--utilization-split", "test"], "unknown utilization split 'test'; choose one of: val, train"),
])
def test_train_user_errors(tmp_path, args, message):
    result = run_cli("train", "--epochs", "1", "--out", tmp_path / "run", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"milesbook: error: {message}" or lines[-1].startswith(f"milesbook: error: {message}")
    assert "Traceback" not in result.stderr


def test_nan_loss_is_one_line_and_nonzero(tmp_path):
    result = run_cli("train", "--dataset", "toy", "--method", "vanilla", "--epochs", "3", "--lr", "1e30",
                     "--out", tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "NaN/inf during epoch 1" in result.stderr.splitlines()[-1]


def test_missing_prepared_dataset_names_the_script(monkeypatch, capsys, tmp_path):
    entry = data_module.DatasetEntry("smnist-test", ("image", "audio"), "needs preparing", load_toy,
                                     prepared=lambda: False, data_script="python data_scripts/smnist.py")
    monkeypatch.setitem(data_module.REGISTRY, "smnist-test", entry)
    code = cli.main(["train", "--dataset", "smnist-test", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "milesbook: error: dataset 'smnist-test' is not prepared; run: python data_scripts/smnist.py"


def test_existing_run_is_not_overwritten(tmp_path):
    first = run_cli("train", "--dataset", "toy", "--epochs", "1", "--out", tmp_path / "run")
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "run" / "history.csv").read_text()
    again = run_cli("train", "--dataset", "toy", "--epochs", "1", "--out", tmp_path / "run")
    assert again.returncode == 2 and "--resume" in again.stderr
    assert (tmp_path / "run" / "history.csv").read_text() == before


def test_train_prints_summary_and_writes_folder(tmp_path):
    result = run_cli("train", "--dataset", "toy", "--method", "miles", "--fusion", "sum", "--epochs", "2",
                     "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.splitlines()[0])
    assert printed == {k: json.loads((tmp_path / "run" / "summary.json").read_text())[k] for k in printed}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["fusion"] == "sum"


def test_datasets_command_lists_what_is_there():
    result = run_cli("datasets")
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "ready" in lines["digits-av"] and "SYNTHETIC" in lines["toy"]


def test_compare_rejects_unknown_names(tmp_path):
    result = run_cli("compare", "--dataset", "toy", "--methods", "vanilla,foo", "--out", tmp_path)
    assert result.returncode == 2 and "unknown method(s) ['foo']" in result.stderr
    result = run_cli("compare", "--dataset", "toy", "--fusions", "concat,max", "--out", tmp_path)
    assert result.returncode == 2 and "unknown fusion 'max'" in result.stderr
