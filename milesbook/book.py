"""The tutorial notebooks as a book: executed copies rendered to self-contained HTML pages (figures
embedded) with an index and a glossary, the code path of `milesbook book`. The full-setting results
are cached in docs/book/ as notebooks without outputs, their outputs (JSON) and figures (PNG), see
`cache` (training them from scratch takes the better part of an hour on 2 cores); the quick setting
is executed on demand.

What a reader sees is not the notebook as executed (`for_readers`): the scaffolding is gone (the
papermill parameters, the install cell, cells tagged `remove-cell`; inputs tagged `remove-input`),
code tagged `hide-input` sits behind a toggle, formulas are MathML made at build time (the pages
need no script and no network), and a lecturer's build (`answers=False`) leaves out the exercises'
answers. Colab and Binder badges appear when pyproject.toml declares a public GitHub repository."""
from __future__ import annotations

import html
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
TEMPLATES = Path(__file__).resolve().parent / "book_templates"
GLOSSARY = "glossary"  # notebooks/glossary.md → glossary.html
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
    copies show no absolute paths, and `source`/work in the quick one."""
    from papermill.exceptions import PapermillExecutionError

    source = Path(source).resolve()
    staging = source.parent / f".{source.name}-executing"
    if work is None:
        work = DEFAULT_OUT_DIR if not quick else str(source / "work")
    executed = []
    for name in NOTEBOOKS:  # one at a time, so that a failure can name its notebook
        try:
            executed += notebooks.run([name], quick=quick, out=staging, parameters={"OUT_DIR": work})
        except PapermillExecutionError as error:
            raise UserError(f"{name} failed in cell {error.cell_index} ({error.ename}: "
                            f"{_first_line(error.evalue)}); {staging / name}.ipynb shows the traceback; "
                            f"the book in {source} is unchanged") from None
    records = source / "records"
    records.mkdir(parents=True, exist_ok=True)
    work_dir = notebooks.notebooks_dir() / work  # an absolute `work` stays itself
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
    """Convert the executed notebooks in `executed_dir` to `out_dir`/<name>.html, one self-contained
    page per chapter with a navigation bar (`for_readers`: what a reader sees), write the glossary and
    `out_dir`/index.html; returns the index's path. `answers=False`: the lecturer's build, the
    exercises without their answers."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    chapters = _read_all(executed_dir)  # every notebook checked before any page is written
    titles = [_title(name, notebook) for name, notebook in chapters]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.TagRemovePreprocessor.remove_input_tags = {"remove-input"}
    config.TagRemovePreprocessor.remove_all_outputs_tags = {"remove-output"}
    config.TemplateExporter.exclude_input_prompt = config.TemplateExporter.exclude_output_prompt = True
    # Outputs' images are base64 already: pages stand alone.
    exporter = HTMLExporter(config=config, template_name="milesbook", extra_template_basedirs=[str(TEMPLATES)])
    repository = repository_url()
    for number, (name, notebook) in enumerate(chapters):
        page, _ = exporter.from_notebook_node(for_readers(notebook, answers))
        nav = _nav(number, titles, _badges(name, repository))
        page = re.sub(r"<body\b[^>]*>", lambda body: body.group(0) + nav, page, count=1)
        head, tag, tail = page.rpartition("</body>")
        _write(out_dir / f"{name}.html", head + nav + tag + tail)
    items = []
    for (name, notebook), title in zip(chapters, titles):
        bullets = "".join(f"<li>{_inline(b)}</li>" for b in _learn_bullets(notebook))
        items.append(f'<li><a href="{name}.html">{html.escape(title)}</a>'
                     + (f"<ul>{bullets}</ul>" if bullets else "") + "</li>")
    index = out_dir / "index.html"
    made = Path(executed_dir) / "records" / PROVENANCE
    made_under = made.read_text().strip() if made.is_file() else \
        "Made under: no provenance recorded (executed before milesbook 0.2; run `milesbook book --execute`)."
    body = _INDEX.format(title=html.escape(TITLE), setting=html.escape(_setting(chapters)),
                         made_under=html.escape(made_under), running=_running(repository),
                         lecturer="" if answers else "<p class=\"setting\">The lecturer's build: the exercises are "
                         "shown without their answers.</p>", items="\n".join(items))
    _write(index, _PAGE.format(title=html.escape(TITLE), nav="", body=body))
    _write_glossary(out_dir, titles)
    return index


# -- what a reader sees ------------------------------------------------------------------------------

def for_readers(notebook, answers: bool = True):
    """A copy of an executed notebook as its page shows it: without the scaffolding cells (`SCAFFOLDING`
    tags, papermill's parameters), formulas as MathML (`to_mathml`) in markdown cells and markdown
    outputs, and without the exercises' answers when `answers` is False."""
    import copy
    notebook = copy.deepcopy(notebook)
    notebook.cells = [c for c in notebook.cells if not SCAFFOLDING & set(c.metadata.get("tags", []))]
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = to_mathml(cell.source if answers else without_answers(cell.source))
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/markdown" in data:
                text = data["text/markdown"]
                data["text/markdown"] = to_mathml("".join(text) if isinstance(text, list) else text)
    return notebook


_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.S)
_MATH = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)|\\\((.+?)\\\)", re.S)


def to_mathml(markdown: str) -> str:
    """`markdown` with each formula — $$…$$ and \\[…\\] displayed, $…$ and \\(…\\) inline — replaced by
    MathML (latex2mathml), outside code spans and fences. A formula that cannot be converted is a
    UserError naming it: a page must not show raw TeX."""
    from latex2mathml.converter import convert

    def formula(match) -> str:
        display_tex, bracket_tex, inline_tex, paren_tex = match.groups()
        tex = display_tex or bracket_tex or inline_tex or paren_tex
        try:
            mathml = convert(tex.strip(), display="block" if (display_tex or bracket_tex) else "inline")
        except Exception as error:  # latex2mathml raises plain exceptions on what it cannot parse
            mathml, why = None, str(error) or type(error).__name__
        else:  # an unknown command comes back as text: the page would show raw TeX
            unknown = re.search(r">(\\[a-zA-Z]+)<", mathml)
            why = f"unknown command {unknown.group(1)}" if unknown else None
        if why is not None:
            raise UserError(f"the book cannot render the formula {tex.strip()!r} ({why}); write it with "
                            "commands MathML supports")
        return mathml
    return "".join(part if part.startswith("`") else _MATH.sub(formula, part) for part in _CODE.split(markdown))


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


def _badges(name: str, repository: str | None) -> str:
    """"Open in Colab" and Binder links for notebook `name` (none without a declared repository)."""
    if repository is None:
        return ""
    repo = repository.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb"
    binder = f"https://mybinder.org/v2/gh/{repo}/main?labpath=notebooks%2F{name}.ipynb"
    return (f'<a href="{colab}"><img alt="Open in Colab" src="https://colab.research.google.com/assets/colab-badge.svg"></a> '
            f'<a href="{binder}"><img alt="Launch Binder" src="https://mybinder.org/badge_logo.svg"></a>')


def install_cell(repository: str | None) -> str:
    """The first cell of every chapter: installs milesbook where it is missing (Colab, Binder), from the
    declared repository; without one it says how to get it. Removed from the book's pages."""
    head = "# milesbook, if this kernel does not have it yet (Colab, Binder, a fresh environment).\ntry:\n    import milesbook\nexcept ImportError:\n"
    if repository is None:
        return head + ('    raise ImportError("milesbook is not installed here: clone its repository, run `make demo` '
                       'there (README) and open this notebook from that checkout") from None')
    return head + f'    %pip install -q "milesbook[notebooks] @ git+{repository}"'


def _running(repository: str | None) -> str:
    """The index's paragraph on running a chapter: locally, and in Colab or on Binder when declared."""
    local = ("<b>Run a chapter yourself.</b> Locally: in a clone, <code>make demo</code> (it creates .venv), then "
             "<code>.venv/bin/jupyter lab notebooks/</code>, or <code>milesbook notebooks --only 03</code> "
             "headlessly; every chapter's parameters cell has a short setting for trying (<code>QUICK = True</code>).")
    if repository is None:
        return f"<p>{local} (No public repository is declared in pyproject.toml, so there are no Colab or Binder links.)</p>"
    return (f"<p>{local} In Colab: each chapter's <i>Open in Colab</i> badge; its first cell installs milesbook from "
            f"{html.escape(repository)}. On Binder: each chapter's <i>launch binder</i> badge (Binder builds "
            "environment.yml).</p>")


def _write_glossary(out_dir: Path, titles: list[str]) -> None:
    """glossary.html from notebooks/glossary.md (formulas as MathML), linked from every page."""
    from nbconvert.filters import markdown2html
    source = notebooks.notebooks_dir() / f"{GLOSSARY}.md"
    if not source.is_file():
        raise UserError(f"no glossary {source}: the book links it from every page")
    body = markdown2html(to_mathml(source.read_text()))
    _write(out_dir / f"{GLOSSARY}.html", _PAGE.format(title=html.escape(f"Glossary — {TITLE}"), body=body,
                                                      nav='<nav><a href="index.html">Contents</a></nav>'))


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


def _inline(text: str) -> str:
    """Simple markdown to HTML: `code`, **bold** and *italic*; $math$ is left as written; all else escaped."""
    parts = []
    for piece in re.split(r"(`[^`]+`|\$[^$]+\$)", text):  # code and math first: no emphasis inside them
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 1:
            parts.append(f"<code>{html.escape(piece[1:-1])}</code>")
        elif piece.startswith("$") and piece.endswith("$") and len(piece) > 1:
            parts.append(html.escape(piece))
        else:
            piece = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(piece))
            parts.append(re.sub(r"\*(.+?)\*", r"<em>\1</em>", piece))
    return "".join(parts)


def _nav(number: int, titles: list[str], badges: str = "") -> str:
    """Links to the index, the glossary and the previous and next chapters (none before the first,
    after the last), and the chapter's launch badges."""
    links = ['<a rel="index" href="index.html">Contents</a>', f'<a href="{GLOSSARY}.html">Glossary</a>']
    if number > 0:
        links.append(f'<a rel="prev" href="{NOTEBOOKS[number - 1]}.html">← {html.escape(titles[number - 1])}</a>')
    if number < len(NOTEBOOKS) - 1:
        links.append(f'<a rel="next" href="{NOTEBOOKS[number + 1]}.html">{html.escape(titles[number + 1])} →</a>')
    return ('<nav class="milesbook-nav" style="font: 15px sans-serif; padding: 0.6em 1em; '
            'border-bottom: 1px solid #ddd; border-top: 1px solid #ddd; margin: 0.5em 0">'
            + " &nbsp;·&nbsp; ".join(links) + (f" &nbsp; {badges}" if badges else "") + "</nav>")


def _write(path: Path, text: str) -> None:
    """A page or record in UTF-8, written whole: a reader never sees half of it."""
    write_text(path, text, encoding="utf-8")


def _first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0]


_INDEX = """<h1>{title}</h1>
<p class="setting">These pages show the {setting}.</p>
<p class="setting">{made_under}</p>
{lecturer}
{running}
<p>Words used throughout: <a href="glossary.html">the glossary</a>.</p>
<ol>
{items}
</ol>"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  body {{ font: 17px/1.55 Georgia, serif; max-width: 46em; margin: 2em auto; padding: 0 1em; color: #222; }}
  h1 {{ font-size: 1.6em; line-height: 1.25; }}
  .setting {{ color: #555; font-style: italic; }}
  ol > li {{ margin: 1.1em 0; }}
  ol > li > a {{ font-size: 1.15em; font-weight: bold; }}
  ul {{ margin: 0.3em 0; }}
  code {{ font: 0.9em monospace; background: #f3f3f3; padding: 0 0.2em; }}
  a {{ color: #1a5fb4; }}
</style>
</head>
<body>
{nav}
{body}
</body>
</html>
"""
