"""The tutorial notebooks as a book, built by Jupyter Book 1 (Sphinx): the code path of `milesbook book`.
The full-setting results are cached in docs/book/ as notebooks without outputs, their outputs (JSON)
and figures (PNG), see `cache` (training them from scratch takes the better part of an hour on 2
cores); the quick setting is executed on demand.

What a reader sees is not the notebook as executed (`for_readers`): the scaffolding is gone (the
papermill parameters, the install cell, cells tagged `remove-cell`; inputs tagged `remove-input`),
code tagged `hide-input` sits behind a toggle, a box says what the page was made with and how to run
it, and each exercise has its own answer toggle (a lecturer's build, `answers=False`, leaves the
answers out). Jupyter Book adds the side table of contents, prev/next links, an offline search box and
the references (`sphinxcontrib-bibtex`); `book_sphinx` renders formulas as MathML at build time, so
the pages need no network. Colab and Binder buttons appear when pyproject.toml declares a public
GitHub repository."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from . import notebooks
from .atomic import write_text
from .errors import UserError
from .notebooks import NOTEBOOKS

TITLE = "milesbook — balanced multimodal learning, the book"
SCAFFOLDING = {"parameters", "injected-parameters", "remove-cell"}  # cells a page never shows
GLOSSARY = "glossary"  # notebooks/glossary.md → glossary.html
APPENDIX = "methods"  # the methods appendix: every method in a line, with its paper
REFERENCES = "references"  # the bibliography page
BIBLIOGRAPHY = Path(__file__).resolve().parent / "references.bib"  # the MILES paper first, then methods, datasets
FULL = "full setting"
QUICK = "quick (CI) setting — figures from tiny runs"
DEFAULT_OUT_DIR = "../runs/notebooks"  # the notebooks' own OUT_DIR, relative to notebooks/


def source_dir() -> Path:
    """The cached full-setting executed notebooks: docs/book/ in the source checkout."""
    return notebooks.notebooks_dir().parent / "docs" / "book"


PROVENANCE = "provenance.txt"  # in records/: the provenance line of every run the notebooks used


def execute(source, quick: bool, work: str | None = None) -> list[Path]:
    """Execute every notebook (papermill) and put the executed copies in `source`, with the records of
    their runs in `source`/records/, so the book carries its numbers. The notebooks run in a staging
    folder beside `source` and replace the cached copies only once all of them have succeeded: a
    failure leaves the cached book as it was. `work` is the notebooks' OUT_DIR (relative to notebooks/
    or absolute); by default the notebooks' own ../runs/notebooks in the full setting, so the executed
    copies show no absolute paths, and `source`/work in the quick one. The full setting first executes
    the quick one from scratch in a folder beside `source`, only to time it for each page's run box."""
    source = Path(source).resolve()
    staging = source.parent / f".{source.name}-executing"
    if work is None:
        work = DEFAULT_OUT_DIR if not quick else str(source / "work")
    quick_seconds = {}
    if not quick:  # the quick setting timed from scratch as well, for each page's run box; then thrown away
        timing = source.parent / f".{source.name}-timing-quick"  # ours: a failed notebook stays readable here
        shutil.rmtree(timing, ignore_errors=True)
        for path in _execute_each(timing / "notebooks", True, str(timing / "work"), source, "the quick timing run: "):
            quick_seconds[path.stem] = _duration(path)
        shutil.rmtree(timing)
    executed = _execute_each(staging, quick, work, source)
    work_dir = notebooks.notebooks_dir() / work  # an absolute `work` stays itself
    for path in executed:
        _note_timings(path, quick_seconds.get(path.stem), work_dir)
    records = source / "records"
    records.mkdir(parents=True, exist_ok=True)
    for name in NOTEBOOKS:
        record = work_dir / f"record-{name[:2]}.json"
        if record.exists():
            _write(records / record.name, relative_paths(record.read_text(), records))
    # What the book's numbers were made under: every run folder the notebooks trained or reused, one line
    # per dataset setting (the chapters use several on purpose; within one, a mix would be news).
    from . import provenance
    runs = sorted(p.parent for p in work_dir.rglob(provenance.FILE) if ".stale-" not in str(p))
    by_data: dict = {}
    for record in (provenance.read(p) for p in runs):
        key = (record or {}).get("data.name"), (record or {}).get("data.fingerprint")
        by_data.setdefault(key, []).append(record)
    lines = [f"{provenance.summarize_many(group)} ({len(group)} run{'s' if len(group) > 1 else ''})"
             for group in sorted(by_data.values(), key=len, reverse=True)]
    (records / PROVENANCE).write_text("\n".join(lines) + "\n")
    placed = []
    for path in executed:
        placed.append(cache(path, source))
    shutil.rmtree(staging, ignore_errors=True)
    return placed


def _execute_each(staging: Path, quick: bool, work: str, book: Path, which: str = "") -> list[Path]:
    """Execute every notebook into `staging`, one at a time, so that a failure can name its notebook."""
    from papermill.exceptions import PapermillExecutionError

    executed = []
    for name in NOTEBOOKS:
        try:
            executed += notebooks.run([name], quick=quick, out=staging, parameters={"OUT_DIR": work})
        except PapermillExecutionError as error:
            raise UserError(f"{which}{name} failed in cell {error.cell_index} ({error.ename}: "
                            f"{_first_line(error.evalue)}); {staging / name}.ipynb shows the traceback; "
                            f"the book in {book} is unchanged") from None
    return executed


def _duration(executed: Path) -> float:
    """Seconds papermill took to execute a notebook, as it recorded them in the notebook."""
    import json
    return json.loads(Path(executed).read_text())["metadata"]["papermill"]["duration"]


def _note_timings(executed: Path, quick_seconds: float | None, work_dir: Path) -> None:
    """Keep in the executed notebook's metadata what its run box says: how long the quick setting took
    from scratch (None: not timed), the cores this process could use, and the chapter's own runs
    (folders `<NN>-…` of its OUT_DIR): how many, how many were written during this execution (the
    others were loaded from earlier ones) and the training time they recorded."""
    import json
    from datetime import datetime
    notebook = json.loads(Path(executed).read_text())
    started = datetime.fromisoformat(notebook["metadata"]["papermill"]["start_time"]).timestamp()
    paths = [p for p in sorted(work_dir.glob(f"{executed.stem[:2]}-*/**/summary.json")) if ".stale-" not in str(p)]
    notebook["metadata"]["milesbook"] = {
        "quick_seconds": quick_seconds, "cores": _cores(), "runs": len(paths),
        "trained_here": sum(p.stat().st_mtime >= started for p in paths),  # the others were loaded
        "train_seconds": sum(json.loads(p.read_text()).get("train_seconds") or 0.0 for p in paths)}
    _write(Path(executed), json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def _cores() -> int:
    """The CPU cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def relative_paths(text: str, folder: Path) -> str:
    """`text` with every absolute path inside this checkout written relative to `folder`, where the
    text is kept: the repository holds no machine's paths."""
    root = notebooks.notebooks_dir().parent.resolve()
    return text.replace(f"{root}/", f"{os.path.relpath(root, Path(folder).resolve())}/")


def cache(executed_path, source) -> Path:
    """Store one executed notebook in `source` the way the repository keeps it: the notebook without
    outputs (`source`/<name>.ipynb), its outputs as JSON (`source`/outputs/<name>.json) and its figures
    as PNG files (`source`/figures/<name>-<cell>-<k>.png). `render` puts them back together."""
    import base64
    import json

    import nbformat

    from .notebooks import strip
    source = Path(source)
    name = Path(executed_path).stem
    notebook = nbformat.read(executed_path, as_version=4)
    (source / "figures").mkdir(parents=True, exist_ok=True)
    for old in (source / "figures").glob(f"{name}-*.png"):
        old.unlink()
    cells = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.get("outputs"):
            continue
        outputs = []
        for k, output in enumerate(cell.outputs):
            output = json.loads(json.dumps(output))  # a plain copy
            png = output.get("data", {}).get("image/png")
            if png is not None:
                figure = f"{name}-{index}-{k}.png"
                (source / "figures" / figure).write_bytes(base64.b64decode(png))
                output["data"]["image/png"] = {"file": f"figures/{figure}"}
            outputs.append(output)
        cells[str(index)] = {"execution_count": cell.execution_count, "outputs": outputs}
    (source / "outputs").mkdir(parents=True, exist_ok=True)
    _write(source / "outputs" / f"{name}.json",
           relative_paths(json.dumps(cells, indent=1, ensure_ascii=False) + "\n", source))
    target = source / f"{name}.ipynb"
    if Path(executed_path).resolve() != target.resolve():
        shutil.copyfile(executed_path, target)
    strip(target)
    kept = json.loads(target.read_text())
    papermill = kept.get("metadata", {}).get("papermill")
    if papermill:  # where it ran from and to, relative to `source`: not this machine's staging folder
        papermill["input_path"] = os.path.relpath(notebooks.find(name), source.resolve())
        papermill["output_path"] = f"{name}.ipynb"
        _write(target, json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    return target


def _restore(notebook, outputs_file: Path) -> None:
    """Put a cached notebook's outputs (and figures) back into it, in place."""
    import base64
    import json

    import nbformat
    cells = json.loads(outputs_file.read_text())
    for index, saved in cells.items():
        cell = notebook.cells[int(index)]
        cell.execution_count = saved["execution_count"]
        for output in saved["outputs"]:
            png = output.get("data", {}).get("image/png")
            if isinstance(png, dict):
                output["data"]["image/png"] = base64.b64encode((outputs_file.parent.parent / png["file"]).read_bytes()).decode()
        cell.outputs = [nbformat.from_dict(o) for o in saved["outputs"]]


def render(executed_dir, out_dir, answers: bool = True) -> Path:
    """Build the book from the executed notebooks in `executed_dir` with Jupyter Book 1 (Sphinx): one
    page per chapter as a reader sees it (`for_readers`), an index, the glossary, a methods appendix and
    the references, with a side table of contents, prev/next links and a search box that work offline.
    The pages go to `out_dir` (replaced whole once the build has succeeded); returns its index.html.
    `answers=False`: the lecturer's build, the exercises without their answers."""
    import tempfile

    chapters = _read_all(executed_dir)  # every notebook checked before anything is written
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="milesbook-book-") as scratch:
        source = Path(scratch) / "book"
        write_source(chapters, Path(executed_dir), source, answers)
        built = _build(source, Path(scratch) / "build")
        staged = out_dir.with_name(f".{out_dir.name}-building")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(built, staged)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    return out_dir / "index.html"


def write_source(chapters, executed_dir: Path, source: Path, answers: bool = True) -> None:
    """The Jupyter Book source of the book in `source`: each chapter's notebook as a reader sees it, the
    index, glossary, methods appendix and references pages, references.bib, _toc.yml and _config.yml."""
    import nbformat
    import yaml

    source.mkdir(parents=True, exist_ok=True)
    titles = [_title(name, notebook) for name, notebook in chapters]
    for name, notebook in chapters:
        nbformat.write(for_readers(notebook, answers, name), source / f"{name}.ipynb")
    _write(source / "index.md", _index(chapters, titles, executed_dir, answers))
    glossary = notebooks.notebooks_dir() / f"{GLOSSARY}.md"
    if not glossary.is_file():
        raise UserError(f"no glossary {glossary}: the book links it from every page")
    _write(source / f"{GLOSSARY}.md", glossary.read_text(encoding="utf-8"))
    _write(source / f"{APPENDIX}.md", methods_appendix())
    _write(source / f"{REFERENCES}.md", "# References\n\nEvery paper and dataset the chapters cite, the MILES paper "
           "first.\n\n```{bibliography}\n:all:\n```\n")
    shutil.copyfile(BIBLIOGRAPHY, source / "references.bib")
    toc = {"format": "jb-book", "root": "index",
           "parts": [{"caption": "Chapters", "chapters": [{"file": name} for name, _ in chapters]},
                     {"caption": "Appendices", "chapters": [{"file": GLOSSARY}, {"file": APPENDIX}, {"file": REFERENCES}]}]}
    _write(source / "_toc.yml", yaml.safe_dump(toc, sort_keys=False, allow_unicode=True))
    _write(source / "_config.yml", yaml.safe_dump(_config(repository_url()), sort_keys=False, allow_unicode=True))


def _config(repository: str | None) -> dict:
    """Jupyter Book's _config.yml: never execute (the chapters come executed), formulas as MathML
    (`book_sphinx`), the search box without fetching pages (it then works from file:// too), and the
    launch buttons only when a public repository is declared."""
    config = {
        "title": TITLE, "author": "the milesbook authors", "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "bibtex_bibfiles": ["references.bib"],
        "html": {"use_repository_button": repository is not None, "use_issues_button": False,
                 "use_edit_page_button": False, "home_page_in_navbar": True},
        "launch_buttons": {"binderhub_url": "https://mybinder.org" if repository else "",
                           "colab_url": "https://colab.research.google.com" if repository else "", "thebe": False},
        "parse": {"myst_enable_extensions": ["dollarmath", "colon_fence", "deflist", "html_image"]},
        "sphinx": {"extra_extensions": ["milesbook.book_sphinx"],
                   "config": {"html_math_renderer": "mathml", "nb_render_markdown_format": "myst",
                              "bibtex_reference_style": "author_year", "html_show_copyright": False,
                              "html_show_search_summary": False, "html_show_sourcelink": False,
                              "html_theme_options": {"search_bar_text": "Search the book…",
                                                     "use_download_button": False}}},
    }
    if repository:
        config["repository"] = {"url": repository, "path_to_book": "notebooks", "branch": "main"}
    return config


def _build(source: Path, build: Path) -> Path:
    """Run Jupyter Book on `source` into `build`; returns the HTML folder. A failed build is a
    UserError with the build's own last words (a formula that cannot be rendered names itself)."""
    import subprocess
    import sys

    command = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
               "build", str(source), "--path-output", str(build), "--quiet", "--warningiserror"]
    done = subprocess.run(command, capture_output=True, text=True)
    html_dir = build / "_build" / "html"
    if done.returncode != 0 or not (html_dir / "index.html").is_file():  # a warning (an unknown citation, a
        said = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip()         # broken link) fails the build too
                for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        cause = next((line for line in said if "cannot render the formula" in line),
                     next((line.partition("SphinxWarning: ")[2] for line in said if "SphinxWarning: " in line),
                          said[-1] if said else "no output"))
        raise UserError(f"the book did not build: {cause.replace(str(source) + '/', '')}")
    return html_dir


# -- what a reader sees ------------------------------------------------------------------------------

def for_readers(notebook, answers: bool = True, name: str | None = None):
    """A copy of an executed notebook as its page shows it: without the scaffolding cells (`SCAFFOLDING`
    tags, papermill's parameters), a box with the settings it ran with and how to run it after its
    opening cell, and the exercises with one answer toggle each (none when `answers` is False)."""
    import copy

    from nbformat.v4 import new_markdown_cell
    notebook = copy.deepcopy(notebook)
    notebook.metadata.setdefault("language_info", {"name": "python"})  # how its code is highlighted
    box = settings_box(notebook, name) if name is not None else None
    notebook.cells = [c for c in notebook.cells if not SCAFFOLDING & set(c.metadata.get("tags", []))]
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## Exercises"):
            cell.source = per_exercise_answers(cell.source, answers)
    if box is not None and notebook.cells and notebook.cells[0].cell_type == "markdown":
        notebook.cells.insert(1, new_markdown_cell(box))
    return notebook


def settings_box(notebook, name: str) -> str:
    """The box at the top of a chapter: the parameters its page was made with (the parameters cell's
    values, with what papermill injected over them), how long executing it took, and the commands that
    run it yourself."""
    table = parameter_table(notebook)
    parameters = {**{k: v for k, (v, _) in table.items()}, **notebook.metadata.get("papermill", {}).get("parameters", {})}
    quick = bool(parameters.get("QUICK"))
    lines = [":::{admonition} Settings on this page, and running it yourself", ":class: note", "",
             f"This page shows the {QUICK if quick else FULL}"
             + (" (its first code cell shortens the runs below when `QUICK` is true)" if quick else "") + ":", "",
             "| parameter | value | what it is |", "|---|---|---|"]
    for key, (value, meaning) in table.items():
        if key not in ("QUICK", "OUT_DIR", "DEVICE", "WIDGETS"):
            value, meaning = repr(parameters.get(key, value)).replace("|", "\\|"), meaning.replace("|", "\\|")
            lines.append(f"| `{key}` | `{value}` | {meaning} |")
    lines += ["", *_run_box(notebook, name, quick, sliders="WIDGETS" in table), ":::"]
    return "\n".join(lines)


def _run_box(notebook, name: str, quick: bool, sliders: bool) -> list[str]:
    """How to run the chapter yourself, how long it took where its page was made (as `execute` measured
    it), and where the sliders are, if it has any."""
    duration = notebook.metadata.get("papermill", {}).get("duration")
    timings = notebook.metadata.get("milesbook", {})
    lines = [f"**Run it yourself** in a clone after `make demo`: live, `.venv/bin/jupyter lab notebooks/{name}.ipynb`; "
             f"headlessly, `milesbook notebooks --only {name[:2]}` (`--quick` for the quick setting; "
             "`-p NAME VALUE` sets a parameter above)."]
    if sliders:
        lines[0] += " Live, its sliders redraw the figures for any setting of its grid; *Move the sliders* below says what to try."
    said = []
    if timings.get("quick_seconds"):
        said.append(f"the quick setting took {_minutes(timings['quick_seconds'])} from scratch")
    if duration:
        said.append(f"executing {'this page' if quick else 'the full setting'} took {_minutes(duration)}"
                    + _runs_phrase(timings))
    if said:
        cores = f"{timings['cores']} CPU cores, " if timings.get("cores") else ""
        command = "milesbook book --quick" if quick else "milesbook book --execute"
        lines += ["", f"**Time on the machine that made this page** ({cores}`{command}`): " + "; ".join(said) + "."]
    return lines


def _runs_phrase(timings: dict) -> str:
    """What an execution did with the chapter's runs: none of its own, all or some trained then, all
    loaded from earlier executions; and the training time they recorded."""
    runs, here = timings.get("runs"), timings.get("trained_here")
    if runs is None or here is None:  # a page executed before its runs were counted
        return " (runs already made are loaded, not trained again)"
    if runs == 0:
        return "; it keeps no runs of its own (it reads those its parameters name, training any that are missing)"
    plural = "s" if runs > 1 else ""
    what = (f"it trained its {runs} run{plural} then" if here == runs else
            f"its {runs} run{plural} loaded where an earlier execution had made them" if here == 0 else
            f"of its {runs} runs, {here} trained then, the others loaded where an earlier execution had made them")
    return (f" ({what}); training {'them' if runs > 1 else 'it'} took {_minutes(timings['train_seconds'])}, "
            "as the runs recorded")


def parameter_table(notebook) -> dict[str, tuple[object, str]]:
    """{name: (default value, its comment)} from the notebook's `parameters` cell, read as Python
    literals (never executed); a value that is not a literal is kept as its source text."""
    import ast
    cell = next((c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return {}
    found = {}
    lines = cell.source.splitlines()
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = ast.get_source_segment(cell.source, node.value)
            _, _, comment = lines[node.end_lineno - 1].partition("#")
            found[node.targets[0].id] = (value, comment.strip())
    return found


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


_ITEM = re.compile(r"^(\d+)\.[ \t]", re.M)


def _items(text: str) -> tuple[str, list[str]]:
    """(what precedes the first numbered item, each item's text without its number, dedented)."""
    import textwrap
    starts = [m.start() for m in _ITEM.finditer(text)]
    if not starts:
        return text, []
    items = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]
    return text[:starts[0]], [textwrap.dedent(_ITEM.sub("", item, count=1).replace("\n   ", "\n")).strip()
                              for item in items]


def per_exercise_answers(markdown: str, answers: bool = True) -> str:
    """An exercises cell — numbered questions, then one `<details><summary>Answer</summary>` block with
    the numbered answers — rewritten with each answer in its own toggle under its question; without
    the answers when `answers` is False. Questions and answers must pair one to one."""
    block = _ANSWER.search(markdown)
    if block is None:
        return markdown
    head, questions = _items(markdown[:block.start()])
    inner = re.sub(r"^\s*<details>\s*<summary>\s*Answer\s*</summary>|</details>\s*$", "", block.group(0).strip(),
                   flags=re.I)
    _, replies = _items(inner)
    if len(replies) != len(questions):
        raise UserError(f"an exercises cell has {len(questions)} questions but {len(replies)} numbered answers; "
                        "number one answer per question")
    parts = [head.rstrip()]
    for number, (question, reply) in enumerate(zip(questions, replies), start=1):
        parts.append(f"{number}. " + question.replace("\n", "\n   "))
        if answers:
            parts.append(f"::::{{admonition}} Answer {number}\n:class: dropdown\n\n{reply}\n::::")
    return "\n\n".join(parts) + "\n" + markdown[block.end():]


_ANSWER = re.compile(r"<details>\s*<summary>\s*Answer\s*</summary>.*?</details>\s*", re.S | re.I)


def without_answers(markdown: str) -> str:
    """An exercises cell without its `<details><summary>Answer</summary>…</details>` blocks."""
    return _ANSWER.sub("", markdown)


def repository_url() -> str | None:
    """The public GitHub repository pyproject.toml declares (`[project.urls]` Repository or Source),
    or None: the badges and the install cell follow it."""
    import tomllib
    pyproject = notebooks.notebooks_dir().parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    urls = tomllib.loads(pyproject.read_text()).get("project", {}).get("urls", {})
    url = urls.get("Repository") or urls.get("Source")
    return url.rstrip("/").removesuffix(".git") if url and url.startswith("https://github.com/") else None


def install_cell(repository: str | None) -> str:
    """The first cell of every chapter: installs milesbook where the kernel lacks it — from the clone the
    notebook sits in, else from the declared repository (Colab, Binder) — and otherwise says in one
    line how to get it, with no traceback. Removed from the book's pages."""
    elsewhere = (f'        %pip install -q "milesbook[notebooks] @ git+{repository}"' if repository else
                 "        class NotInstalled(Exception):\n"
                 "            def _render_traceback_(self):  # what IPython shows instead of a traceback\n"
                 "                return [str(self)]\n"
                 '        raise NotInstalled("milesbook is not installed in this kernel: clone its repository, run '
                 '`make demo` there (README) and open the notebook from that clone")')
    # Not editable: an editable install is found only by a kernel started after it.
    return ("# milesbook, if this kernel does not have it yet (Colab, Binder, a fresh environment).\n"
            "try:\n    import milesbook\nexcept ImportError:\n"
            "    from pathlib import Path\n"
            '    if (Path.cwd().parent / "milesbook" / "notebooks.py").is_file():  # notebooks/ of a clone\n'
            '        %pip install -q "..[notebooks]"\n'
            "    else:\n" + elsewhere)


def methods_appendix() -> str:
    """The methods appendix: every registered method in one line with the papers it comes from, in the
    order the comparisons list them (the 2 × 2, the paper's baselines, later methods, the 2025 ones)."""
    from .methods import BASELINES, MAIN_METHODS, METHODS, METHODS_2025, RECENT_METHODS
    groups = [("The 2 × 2 of chapters 2 and 5", MAIN_METHODS), ("The MILES paper's baselines", BASELINES),
              ("Published after them", RECENT_METHODS), ("From 2025, each from its official code", METHODS_2025)]
    listed = {m for _, names in groups for m in names}
    groups.append(("Also registered", tuple(m for m in METHODS if m not in listed and m != "unimodal")))
    lines = ["# Methods at a glance", "",
             "Every method the chapters train, in one line each, with its paper. What each takes from its official "
             "code and where it departs is in the repository's `docs/methods.md` and in each module's docstring; "
             "`unimodal-<m>` is one modality's encoder with its own head, trained alone.", ""]
    for caption, names in groups:
        if not names:
            continue
        lines += [f"## {caption}", "", "| method | what it does | paper |", "|---|---|---|"]
        for name in names:
            method = METHODS[name]
            cites = ", ".join(f"{{cite:t}}`{key}`" for key in method.papers) or "—"
            lines.append(f"| `{name}` | {method.description} | {cites} |")
        lines.append("")
    return "\n".join(lines)


def _running(repository: str | None) -> str:
    """The index's paragraph on running a chapter: locally, and in Colab or on Binder when declared."""
    local = ("**Run a chapter yourself.** Locally: in a clone, `make demo` (it creates .venv), then "
             "`.venv/bin/jupyter lab notebooks/`, or `milesbook notebooks --only 03` headlessly; every chapter's "
             "parameters have a short setting for trying (`QUICK = True`, `--quick`). Each chapter's first box "
             "says what its page was made with.")
    if repository is None:
        return local + " (No public repository is declared in pyproject.toml, so there are no Colab or Binder buttons.)"
    return (local + f" In Colab or on Binder: the launch button at the top of each chapter (its first cell installs "
            f"milesbook from {repository}; Binder builds environment.yml).")


def _index(chapters, titles: list[str], executed_dir: Path, answers: bool) -> str:
    """The book's first page: what it is, the setting its pages show, how to run a chapter, every chapter
    with what it teaches, and what the numbers were made under (as sentences, not records)."""
    lines = [f"# {TITLE}", "",
             "A book of tutorials on *balanced multimodal learning* around MILES {cite:p}`miles2025`: when a model "
             "fuses two modalities, one often learns for both and starves the other; each chapter shows it, "
             "measures it, and tests a remedy on real data, with the numbers written from its own runs.", "",
             f"These pages show the {_setting(chapters)}."]
    if not answers:
        lines += ["", "The lecturer's build: the exercises are shown without their answers."]
    lines += ["", _running(repository_url()), "",
              f"Words used throughout are in the [glossary]({GLOSSARY}.md); every method in the "
              f"[methods appendix]({APPENDIX}.md); every paper and dataset in the [references]({REFERENCES}.md).",
              "", "## Chapters", ""]
    for number, ((name, notebook), title) in enumerate(zip(chapters, titles), start=1):
        lines.append(f"{number}. [{title}]({name}.ipynb)")
        lines += [f"   - {bullet}" for bullet in _learn_bullets(notebook)]
    lines += ["", "## What the numbers were made under", ""]
    made = executed_dir / "records" / PROVENANCE
    if made.is_file():
        lines += [f"- {readable_provenance(line)}" for line in made.read_text().splitlines() if line.strip()]
    else:
        lines.append("No provenance recorded (executed before milesbook 0.2): run `milesbook book --execute`.")
    return "\n".join(lines) + "\n"


def readable_provenance(line: str) -> str:
    """One line of records/provenance.txt as a sentence: the summary kept, the record of a mixed group
    (which fields differ, with their values as JSON) said as how many runs differ in which fields."""
    line = line.removeprefix("Made under: ")
    summary, mixed, rest = line.partition(" These runs MIX provenance: ")
    if not mixed:
        return summary
    count = re.search(r"\((\d+) runs?\)\s*$", rest)
    differ = re.match(r"(\d+) run\(s\) differ: (.*)", rest)
    fields = re.findall(r"(?:^|, )([a-z_.]+) \(most ", differ.group(2)) if differ else []
    runs = f"the {count.group(1)} runs" if count else "the runs"
    said = f"; {differ.group(1)} of {runs} differ in {', '.join(fields) or 'their set-up'}" if differ else ""
    return summary.rstrip(". ") + said + "."


def setting(executed_dir) -> str:
    """FULL or QUICK: which setting the executed notebooks in `executed_dir` were run in."""
    return _setting(_read_all(executed_dir))


def _read_all(executed_dir) -> list:
    """(name, notebook) for each of NOTEBOOKS in `executed_dir`; a missing one, or one holding an error
    output, is a UserError."""
    import nbformat

    chapters = []
    for name in NOTEBOOKS:
        path = Path(executed_dir) / f"{name}.ipynb"
        if not path.is_file():
            raise UserError(f"no executed notebook {path}; run `milesbook book --execute` to execute the notebooks "
                            f"(the full setting: under an hour on 2 cores), or `milesbook book --quick` for the CI setting (minutes)")
        notebook = nbformat.read(path, as_version=4)
        outputs = Path(executed_dir) / "outputs" / f"{name}.json"
        if outputs.is_file():  # the cached form: outputs and figures beside a notebook without them
            _restore(notebook, outputs)
        for index, cell in enumerate(notebook.cells):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    raise UserError(f"{name}: cell {index} (counting from 0) failed ({output.get('ename')}: "
                                    f"{_first_line(output.get('evalue', ''))}); fix it and run "
                                    f"`milesbook book --execute` again")
        chapters.append((name, notebook))
    return chapters


def _setting(chapters) -> str:
    quick = any(notebook.metadata.get("papermill", {}).get("parameters", {}).get("QUICK")
                for _, notebook in chapters)
    return QUICK if quick else FULL


def _title(name: str, notebook) -> str:
    """The first `# ` heading of the notebook's markdown, else its file name."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return name


def _learn_bullets(notebook) -> list[str]:
    """The bullets under "You will learn" in the first markdown cell (a wrapped bullet's next lines
    are indented and joined to it)."""
    first = next((c for c in notebook.cells if c.cell_type == "markdown"), None)
    lines = first.source.splitlines() if first else []
    start = next((i + 1 for i, line in enumerate(lines) if "you will learn" in line.lower()), len(lines))
    bullets = []
    for line in lines[start:]:
        if line.startswith(("- ", "* ")):
            bullets.append(line[2:].strip())
        elif bullets and line.startswith(" ") and line.strip():
            bullets[-1] += " " + line.strip()
        elif bullets or line.strip():  # the list ends at its first other line; blank lines may precede it
            break
    return bullets


def _write(path: Path, text: str) -> None:
    """A page or record in UTF-8, written whole: a reader never sees half of it."""
    write_text(path, text, encoding="utf-8")


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0]


