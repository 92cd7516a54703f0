"""The book: executed notebooks rendered to HTML pages and an index (small stand-in notebooks, no kernel)."""
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from milesbook import book, notebooks, provenance
from milesbook.errors import UserError
from milesbook.notebooks import NOTEBOOKS

from .conftest import run_cli

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")  # 1×1


def write_notebook(folder, number, quick=False, bullets="- one thing\n- `code` thing", outputs=None):
    name = NOTEBOOKS[number - 1]
    notebook = new_notebook(cells=[
        new_markdown_cell(f"# {number} · Title {number}\n\nText.\n\n**You will learn**\n{bullets}"),
        new_code_cell("plot()", execution_count=1,
                      outputs=outputs or [new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]),
    ])
    notebook.metadata["papermill"] = {"parameters": {"QUICK": quick}}
    nbformat.write(notebook, folder / f"{name}.ipynb")


@pytest.fixture
def executed(tmp_path):
    folder = tmp_path / "executed"
    folder.mkdir()
    for number in range(1, len(NOTEBOOKS) + 1):
        write_notebook(folder, number)
    return folder


def test_index_lists_every_chapter_in_order(executed, tmp_path):
    index = book.render(executed, tmp_path / "html")
    assert index == tmp_path / "html" / "index.html"
    text = index.read_text()
    links = [text.index(f'href="{name}.html"') for name in NOTEBOOKS]
    assert links == sorted(links)
    assert "<title>milesbook — balanced multimodal learning, the book</title>" in text
    assert "full setting" in text and "quick" not in text
    for number in range(1, len(NOTEBOOKS) + 1):
        assert f">{number} · Title {number}</a>" in text
    assert text.count("<li>one thing</li>") == len(NOTEBOOKS)
    assert text.count("<li><code>code</code> thing</li>") == len(NOTEBOOKS)
    assert "**" not in text and "- one" not in text


def test_pages_embed_figures_and_link_neighbours(executed, tmp_path):
    book.render(executed, tmp_path / "html")
    pages = [(tmp_path / "html" / f"{name}.html").read_text() for name in NOTEBOOKS]
    for number, page in enumerate(pages):
        assert f"data:image/png;base64,{PNG}" in page
        assert page.count('<a rel="index" href="index.html">') == 2  # top and bottom
        body = page.index("<body")
        assert body < page.index('<nav class="milesbook-nav"') and page.rindex("</nav>") < page.rindex("</body>")
        if number + 1 < len(NOTEBOOKS):
            assert page.count(f'rel="next" href="{NOTEBOOKS[number + 1]}.html"') == 2
        if number > 0:
            assert page.count(f'rel="prev" href="{NOTEBOOKS[number - 1]}.html"') == 2
    assert 'rel="prev"' not in pages[0] and 'rel="next"' in pages[0]
    assert 'rel="next"' not in pages[-1] and 'rel="prev"' in pages[-1]
    assert not list((tmp_path / "html").glob("*.tmp"))


def test_one_quick_notebook_makes_the_book_quick(executed, tmp_path):
    write_notebook(executed, 3, quick=True)
    text = book.render(executed, tmp_path / "html").read_text()
    assert "quick (CI) setting — figures from tiny runs" in text and "full setting" not in text
    assert book.setting(executed) == book.QUICK


def test_bullets_render_simple_markdown_and_escape_the_rest(executed, tmp_path):
    write_notebook(executed, 2, bullets="\n- **bold**, *italic* and $a*b<c$\n- a <script> tag\n  wrapped on\n\nAfter.")
    text = book.render(executed, tmp_path / "html").read_text()
    assert "<li><strong>bold</strong>, <em>italic</em> and $a*b&lt;c$</li>" in text
    assert "<li>a &lt;script&gt; tag wrapped on</li>" in text
    assert "After." not in text


def test_missing_notebook_names_it(executed, tmp_path):
    (executed / f"{NOTEBOOKS[4]}.ipynb").unlink()
    with pytest.raises(UserError) as error:
        book.render(executed, tmp_path / "html")
    message = str(error.value)
    assert f"{NOTEBOOKS[4]}.ipynb" in message and "milesbook book --execute" in message and "\n" not in message
    assert not (tmp_path / "html").exists()  # nothing written before every notebook is checked


def test_error_output_names_notebook_and_cell(executed, tmp_path):
    failed = new_output("error", ename="ValueError", evalue="bad value\nmore", traceback=["..."])
    write_notebook(executed, 2, outputs=[failed])
    with pytest.raises(UserError) as error:
        book.render(executed, tmp_path / "html")
    assert str(error.value).startswith(f"{NOTEBOOKS[1]}: cell 1 (counting from 0) failed (ValueError: bad value);")


@pytest.mark.parametrize("quick", [False, True])
def test_execute_replaces_the_cached_copies_only_when_all_succeed(tmp_path, monkeypatch, quick):
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    source = tmp_path / "source"
    source.mkdir()
    (source / f"{NOTEBOOKS[0]}.ipynb").write_text("cached")
    calls, fail = [], {"at": NOTEBOOKS[2]}

    def fake_run(names, quick, out, parameters):  # writes the executed copy into `out`, the record into OUT_DIR
        calls.append((list(names), quick, parameters))
        if names[0] == fail["at"]:
            from papermill.exceptions import PapermillExecutionError
            raise PapermillExecutionError(3, 4, "source", "trace", "ValueError", "bad value")
        Path(out).mkdir(parents=True, exist_ok=True)
        write_notebook(Path(out), NOTEBOOKS.index(names[0]) + 1)
        notebooks.record(checkout / "notebooks" / parameters["OUT_DIR"], names[0][:2], {"accuracy": 0.5})
        run = checkout / "notebooks" / parameters["OUT_DIR"] / "runs" / names[0]  # a run the chapter trained
        run.mkdir(parents=True, exist_ok=True)
        (run / provenance.FILE).write_text(json.dumps(provenance.collect("cpu", 1)))
        return [Path(out) / f"{names[0]}.ipynb"]

    monkeypatch.setattr(notebooks, "notebooks_dir", lambda: checkout / "notebooks")
    monkeypatch.setattr(notebooks, "run", fake_run)
    with pytest.raises(UserError, match=f"{NOTEBOOKS[2]} failed in cell 3 .*the book in .* is unchanged"):
        book.execute(source, quick=quick)
    assert (source / f"{NOTEBOOKS[0]}.ipynb").read_text() == "cached"  # a failure changes nothing cached
    assert not (source / f"{NOTEBOOKS[1]}.ipynb").exists()

    fail["at"], calls[:] = None, []
    executed = book.execute(source, quick=quick)
    assert executed == [source.resolve() / f"{name}.ipynb" for name in NOTEBOOKS]
    assert not notebooks.has_outputs(source / f"{NOTEBOOKS[0]}.ipynb")  # kept in the cached form
    assert (source / "figures" / f"{NOTEBOOKS[0]}-1-0.png").is_file()
    work = str(source.resolve() / "work") if quick else "../runs/notebooks"
    assert calls == [([name], quick, {"OUT_DIR": work}) for name in NOTEBOOKS]
    copied = sorted(p.name for p in (source / "records").iterdir() if p.suffix == ".json")
    assert copied == sorted(f"record-{name[:2]}.json" for name in NOTEBOOKS)
    # what the book's numbers were made under: one line for the runs of every chapter
    made = (source / "records" / book.PROVENANCE).read_text()
    assert made.startswith("Made under: milesbook ") and ", 1 thread, deterministic on." in made
    assert json.loads((source / "records" / copied[0]).read_text()) == {"accuracy": 0.5}
    assert not (tmp_path / ".source-executing").exists()


def test_cli_without_executed_notebooks_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("book", "--source", empty, "--out", tmp_path / "html")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"milesbook: error: no executed notebook {empty / NOTEBOOKS[0]}.ipynb;")


def test_cli_renders_and_says_what(executed, tmp_path):
    result = run_cli("book", "--source", executed, "--out", tmp_path / "html")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"book: {tmp_path / 'html' / 'index.html'} ({len(NOTEBOOKS)} chapters, full setting)"


def test_the_cached_form_has_no_outputs_in_notebooks_and_renders_the_same_page(executed, tmp_path):
    direct = book.render(executed, tmp_path / "direct").parent
    source = tmp_path / "cached"
    for name in NOTEBOOKS:
        book.cache(executed / f"{name}.ipynb", source)
        assert not notebooks.has_outputs(source / f"{name}.ipynb")
        assert (source / "figures" / f"{name}-1-0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((source / "outputs" / f"{name}.json").read_text())["1"]["execution_count"] == 1
    rebuilt = book.render(source, tmp_path / "rebuilt").parent
    for name in NOTEBOOKS:
        assert (rebuilt / f"{name}.html").read_text() == (direct / f"{name}.html").read_text()


def test_the_cached_form_holds_no_absolute_path_of_the_checkout(tmp_path):
    """What a notebook printed about the checkout, and where papermill ran it, kept relative to the
    cached folder: the repository holds no machine's paths."""
    root = notebooks.notebooks_dir().parent.resolve()
    name = NOTEBOOKS[0]
    executed = tmp_path / "executed"
    executed.mkdir()
    printed = f"data in {root}/runs/notebooks/08-halves\n"
    write_notebook(executed, 1, outputs=[new_output("stream", name="stdout", text=printed)])
    staged = json.loads((executed / f"{name}.ipynb").read_text())
    staged["metadata"]["papermill"].update(input_path=str(root / "notebooks" / f"{name}.ipynb"),
                                           output_path=str(root / "docs" / ".book-executing" / f"{name}.ipynb"))
    (executed / f"{name}.ipynb").write_text(json.dumps(staged))
    source = root / "build" / "test-cached-book"  # two levels below the checkout, as docs/book is
    try:
        book.cache(executed / f"{name}.ipynb", source)
        outputs = (source / "outputs" / f"{name}.json").read_text()
        kept = json.loads((source / f"{name}.ipynb").read_text())["metadata"]["papermill"]
        assert str(root) not in outputs and "data in ../../runs/notebooks/08-halves" in outputs
        assert kept["input_path"] == f"../../notebooks/{name}.ipynb" and kept["output_path"] == f"{name}.ipynb"
    finally:
        shutil.rmtree(source, ignore_errors=True)


# -- what a reader sees ------------------------------------------------------------------------------

def test_formulas_become_mathml_outside_code():
    text = book.to_mathml("Eq. 4: $u_A = \\frac{a}{b}$, and $$\\delta = |u_A - u_B|$$ but `$x$` stays")
    assert text.count("<math") == 2 and 'display="block"' in text and 'display="inline"' in text
    assert "<mfrac>" in text and "`$x$`" in text and "$u_A" not in text and "$$" not in text
    assert book.to_mathml("cost: 5 apples") == "cost: 5 apples"
    with pytest.raises(UserError, match=r"cannot render the formula .*\(unknown command \\nosuch\)"):
        book.to_mathml("$u = \\nosuch x$")
    with pytest.raises(UserError, match="cannot render the formula"):
        book.to_mathml("$$\\begin{foo}$$")


def test_a_page_hides_scaffolding_and_a_lecturer_build_hides_answers(executed, tmp_path):
    name = NOTEBOOKS[1]
    notebook = nbformat.read(executed / f"{name}.ipynb", as_version=4)
    params = new_code_cell("QUICK = False  # parameters", execution_count=2, metadata={"tags": ["parameters"]})
    record = new_code_cell("record = {'a': 1}\nrecord", execution_count=3, metadata={"tags": ["remove-cell"]},
                           outputs=[new_output("execute_result", data={"text/plain": "{'a': 1}"}, execution_count=3)])
    prose = new_code_cell("display(Markdown(text))", execution_count=4, metadata={"tags": ["remove-input"]},
                          outputs=[new_output("display_data", data={"text/markdown": "The rate $u_A$ rose."})])
    hidden = new_code_cell("import milesbook as mb", execution_count=5, metadata={"tags": ["hide-input"]})
    exercises = new_markdown_cell("## Exercises\n\n1. **Q.** Why?\n\n<details>\n<summary>Answer</summary>\n\n"
                                  "Because $x$.\n\n</details>\n")
    notebook.cells += [params, record, prose, hidden, exercises]
    nbformat.write(notebook, executed / f"{name}.ipynb")
    book.render(executed, tmp_path / "html")
    page = (tmp_path / "html" / f"{name}.html").read_text()
    assert "QUICK = False" not in page and "{&#x27;a&#x27;: 1}" not in page and "{'a': 1}" not in page
    assert "display(Markdown(text))" not in page and "The rate <math" in page and "$u_A$" not in page
    assert '<details class="milesbook-code"><summary>Show the code</summary>' in page
    assert "<summary>Answer</summary>" in page and "Because <math" in page
    assert "In&nbsp;[" not in page and "cdnjs" not in page and "MathJax" not in page
    book.render(executed, tmp_path / "lecturer", answers=False)
    lecturer = (tmp_path / "lecturer" / f"{name}.html").read_text()
    assert "<summary>Answer</summary>" not in lecturer and "Why?" in lecturer
    assert "without their answers" in (tmp_path / "lecturer" / "index.html").read_text()


def test_glossary_is_linked_from_every_page(executed, tmp_path):
    book.render(executed, tmp_path / "html")
    glossary = (tmp_path / "html" / "glossary.html").read_text()
    assert "Conditional utilization rate" in glossary and "<math" in glossary and "$" not in glossary
    for name in NOTEBOOKS:
        assert '<a href="glossary.html">Glossary</a>' in (tmp_path / "html" / f"{name}.html").read_text()


def test_badges_and_install_cell_follow_the_declared_repository(executed, tmp_path, monkeypatch):
    book.render(executed, tmp_path / "none")
    assert "colab" not in (tmp_path / "none" / f"{NOTEBOOKS[0]}.html").read_text()
    assert "No public repository is declared" in (tmp_path / "none" / "index.html").read_text()
    assert "raise ImportError" in book.install_cell(None)
    monkeypatch.setattr(book, "repository_url", lambda: "https://github.com/someone/milesbook")
    book.render(executed, tmp_path / "declared")
    page = (tmp_path / "declared" / f"{NOTEBOOKS[2]}.html").read_text()
    assert (f'href="https://colab.research.google.com/github/someone/milesbook/blob/main/notebooks/{NOTEBOOKS[2]}.ipynb"'
            in page)
    assert f'href="https://mybinder.org/v2/gh/someone/milesbook/main?labpath=notebooks%2F{NOTEBOOKS[2]}.ipynb"' in page
    assert '%pip install -q "milesbook[notebooks] @ git+https://github.com/someone/milesbook"' in \
        book.install_cell("https://github.com/someone/milesbook")
