"""The package's shape: no import circle, every module in the wheel, and a method's knobs declared
once — a method added in this file gets its flag, range check and cache key from the declaration."""
import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import milesbook as mb
from milesbook import cli
from milesbook.config import relevant_config
from milesbook.errors import UserError
from milesbook.methods import METHODS, Hyperparameter, SearchRange, base, register

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "milesbook"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Who imports whom among milesbook's modules, from every import statement (function-level ones
    too). `from P import n` names the submodule P.n when there is one, else P; naming a package
    means importing its `__init__`."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base_name = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base_name = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    child = f"{base_name}.{alias.name}"
                    targets.append(child if child in modules else base_name)
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, …, a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    graph = import_graph()
    assert "milesbook.datasets.registry" in graph and "milesbook.methods.base" in graph
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_cycle_finder_sees_a_circle_through_a_package_init():
    # the shape the layout removed: the registry's package imports a member that imports the package
    graph = {"p": {"p.a"}, "p.a": {"p"}, "q": set()}
    assert find_cycle(graph) == ["p", "p.a", "p"]
    assert find_cycle({"p": {"p.a"}, "p.a": set()}) is None


def test_registries_import_no_member():
    graph = import_graph()
    datasets = {m for m in graph if m.startswith("milesbook.datasets.")}
    methods = {m for m in graph if m.startswith("milesbook.methods.")}
    assert not graph["milesbook.datasets.registry"] & datasets
    assert not graph["milesbook.methods.base"] & methods


# The bottom row of docs/layout.md: modules that import nothing of ours but errors.
LOW = {"milesbook.errors", "milesbook.atomic", "milesbook.seed_stats", "milesbook.safe_load", "milesbook.metrics",
       "milesbook.miles"}


def imports_above(graph: dict[str, set[str]]) -> list[str]:
    """"a → b" for each import pointing up: a bottom-row module importing any of ours but errors, or a
    dataset module importing outside `milesbook.datasets` and the bottom row (e.g. `runs`)."""
    found = []
    for module, targets in sorted(graph.items()):
        if module in LOW:
            allowed = {"milesbook.errors"}
        elif module == "milesbook.datasets" or module.startswith("milesbook.datasets."):
            allowed = LOW | {m for m in graph if m.startswith("milesbook.datasets")}
        else:
            continue
        found += [f"{module} → {target}" for target in sorted(targets - allowed)]
    return found


def test_imports_point_down():
    assert imports_above(import_graph()) == []


def test_import_direction_check_sees_datasets_importing_runs():
    graph = {"milesbook.runs": set(), "milesbook.errors": set(), "milesbook.atomic": {"milesbook.errors"},
             "milesbook.datasets.prepare": {"milesbook.runs", "milesbook.atomic"}}
    assert imports_above(graph) == ["milesbook.datasets.prepare → milesbook.runs"]
    assert imports_above({**graph, "milesbook.atomic": {"milesbook.runs"}})[0] == "milesbook.atomic → milesbook.runs"


def test_wheel_holds_every_module(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(PACKAGE, source / "milesbook", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("milesbook-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "milesbook/references.bib" in names  # the book's bibliography
    inside = {name for name in names if name.endswith(".py")}
    expected = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert {"milesbook/datasets/registry.py", "milesbook/methods/ogm.py"} <= expected
    assert expected <= inside, sorted(expected - inside)


# -- a method added here, with one knob, touches no other module -----------------------------------

GAIN = Hyperparameter("throwaway_gain", 1.0, "how much the throw-away method scales its loss, in (0, 10]",
                      valid=lambda v: 0 < v <= 10, rule="in (0, 10]",
                      search=SearchRange(0.5, 2.0, log=True, source="ours (a test)"))


class Throwaway(base.Aux):
    """Eq. 3 with the loss scaled by `throwaway_gain` (a stand-in for a new method)."""
    name = "throwaway"
    hyperparameters = (GAIN,)

    def loss(self, out, labels, loss_fn):
        return self.config.throwaway_gain * super().loss(out, labels, loss_fn)


@pytest.fixture
def throwaway():
    register(Throwaway)
    yield Throwaway
    del METHODS["throwaway"]


def test_a_method_name_registered_twice_is_refused(throwaway):
    class Again(base.Aux):
        name = "throwaway"
    with pytest.raises(ValueError, match=r"^method 'throwaway' is registered twice \(.*Throwaway and .*Again\)$"):
        register(Again)
    assert METHODS["throwaway"] is Throwaway  # the first stays (the fixture removes it)


def test_new_method_gets_config_attribute_and_range_check(throwaway):
    config = mb.TrainConfig(method="throwaway", throwaway_gain=2.5)
    assert config.throwaway_gain == 2.5 and mb.TrainConfig().throwaway_gain == 1.0
    assert config.to_dict()["throwaway_gain"] == 2.5
    with pytest.raises(UserError, match=r"--throwaway-gain must be in \(0, 10\], got 11"):
        mb.TrainConfig(method="throwaway", throwaway_gain=11).check()


def test_new_method_gets_its_flag(throwaway, tmp_path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--method", "throwaway", "--throwaway-gain", "3", "--out", "x"])
    assert cli._config(args).throwaway_gain == 3.0
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--throwaway-gain THROWAWAY_GAIN [throwaway] how much the throw-away method scales" in help_text
    code = cli.main(["train", "--dataset", "toy", "--method", "throwaway", "--throwaway-gain", "0",
                     "--epochs", "1", "--out", str(tmp_path / "bad")])
    assert code == 2
    assert capsys.readouterr().err.strip() == "milesbook: error: --throwaway-gain must be in (0, 10], got 0.0"
    assert not (tmp_path / "bad").exists()


def test_new_method_knob_is_in_its_cache_key_only(throwaway):
    mine = mb.TrainConfig(method="throwaway").to_dict()
    assert relevant_config({**mine, "throwaway_gain": 2.0}) != relevant_config(mine)
    miles = mb.TrainConfig(method="miles").to_dict()
    assert "throwaway_gain" in miles and "throwaway_gain" not in relevant_config(miles)
    assert relevant_config({**miles, "throwaway_gain": 2.0}) == relevant_config(miles)


def test_new_method_trains_and_its_knob_retrains_only_it(throwaway, toy, tmp_path):
    base_config = mb.TrainConfig(dataset="toy", method="throwaway", epochs=1, batch_size=100, device="cpu")
    first = mb.run_or_reuse(base_config, tmp_path / "t", toy, progress=False)
    assert json.loads((tmp_path / "t" / "config.json").read_text())["throwaway_gain"] == 1.0
    assert mb.run_or_reuse(base_config, tmp_path / "t", toy, progress=False) == first  # cached
    # its knob changes the cache key: retrained, the old run moved aside
    mb.run_or_reuse(base_config.__class__(**{**base_config.to_dict(), "throwaway_gain": 2.0}),
                    tmp_path / "t", toy, progress=False)
    assert json.loads((tmp_path / "t" / "config.json").read_text())["throwaway_gain"] == 2.0
    assert json.loads((tmp_path / "t.stale-1" / "config.json").read_text())["throwaway_gain"] == 1.0


def test_every_figure_a_page_shows_is_in_the_repository():
    """An image link in README.md or docs/ points at a file the checkout has (a deviation report once
    linked dynamics figures that were never committed)."""
    import re
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    missing = [(str(page.relative_to(root)), target) for page in pages
               for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())
               if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()]
    assert not missing, missing
