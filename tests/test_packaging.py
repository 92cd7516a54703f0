"""Set-up stays two commands, and the three places that name dependencies agree."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PINS = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_pins_torch_family():
    deps = _pyproject()["project"]["dependencies"]
    for name, version in PINS.items():
        assert f"{name}=={version}" in deps


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"
    minimum = re.match(r">=(\d+)\.(\d+)", _pyproject()["project"]["requires-python"]).groups()
    assert (3, 11) >= tuple(map(int, minimum))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {line.split("==")[0]: line.split("==")[1] for line in pip if "==" in line}
    assert pinned == PINS
    deps = {re.split(r"[=<>]", d)[0]: d for d in _pyproject()["project"]["dependencies"]}
    for name, version in pinned.items():
        assert deps[name] == f"{name}=={version}"
    installs = [line for line in pip if line.startswith("-e")]
    assert installs == ["-e .[dev,notebooks]"]
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"dev", "notebooks"} <= set(extras)
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[dev,notebooks]'" in makefile  # make and conda install the same extras


def test_console_script_points_at_cli_main():
    assert _pyproject()["project"]["scripts"]["milesbook"] == "milesbook.cli:main"
    from milesbook.cli import main
    assert callable(main)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[-1] == "make test"
