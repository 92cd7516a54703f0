"""The book: executed notebooks rendered to HTML pages and an index (small stand-in notebooks, no kernel)."""
import json
import os
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


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One book built from stand-in chapters (a figure each; chapter 2 with scaffolding, a formula in a
    displayed Markdown output, a hidden input and two exercises), and the lecturer's build of the same."""
    folder = tmp_path_factory.mktemp("executed")
    for number in range(1, len(NOTEBOOKS) + 1):
        write_notebook(folder, number)
    name = NOTEBOOKS[1]
    notebook = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    params = new_code_cell("QUICK = False  # the CI setting\nEPOCHS = 30  # epochs per run", execution_count=2,
                           metadata={"tags": ["parameters"]})
    record = new_code_cell("record = {'a': 1}\nrecord", execution_count=3, metadata={"tags": ["remove-cell"]},
                           outputs=[new_output("execute_result", data={"text/plain": "{'a': 1}"}, execution_count=3)])
    prose = new_code_cell("display(Markdown(text))", execution_count=4, metadata={"tags": ["remove-input"]},
                          outputs=[new_output("display_data", data={"text/markdown": "The rate $u_A$ rose."})])
    hidden = new_code_cell("import milesbook as mb", execution_count=5, metadata={"tags": ["hide-input"]})
    exercises = new_markdown_cell("## Exercises\n\n1. **Why.** Why is $\\delta$ small?\n2. **How.** How many?\n   "
                                  "Count them.\n\n<details>\n<summary>Answer</summary>\n\n1. Because $x$.\n2. Three:"
                                  "\n   one, two, three.\n\n</details>\n")
    notebook.metadata["papermill"]["duration"] = 600.0
    notebook.metadata["milesbook"] = {"quick_seconds": 95.0, "cores": 2, "runs": 6, "trained_here": 2,
                                      "train_seconds": 80.0}
    notebook.cells[1:1] = [params]
    notebook.cells += [record, prose, hidden, exercises]
    nbformat.write(notebook, folder / f"{name}.ipynb")
    out = tmp_path_factory.mktemp("html")
    index = book.render(folder, out / "book")
    book.render(folder, out / "lecturer", answers=False)
    return {"executed": folder, "index": index, "html": out / "book", "lecturer": out / "lecturer"}


def _page(built, name, which="html"):
    return (built[which] / f"{name}.html").read_text()


def _text(html_text: str) -> str:
    """What a reader reads: tags removed, entities decoded, white space collapsed."""
    import html
    import re
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", html_text)))


def test_index_lists_every_chapter_in_order_with_what_it_teaches(built):
    assert built["index"] == built["html"] / "index.html"
    text = built["index"].read_text()
    main = text[text.index("<main"):text.index("</main>")]
    links = [main.index(f'href="{name}.html"') for name in NOTEBOOKS]
    assert links == sorted(links)
    assert "<title>milesbook — balanced multimodal learning, the book" in text
    assert "full setting" in main and "quick (CI)" not in main
    for number in range(1, len(NOTEBOOKS) + 1):
        assert f'href="{NOTEBOOKS[number - 1]}.html"><span class="std std-doc">{number} · Title {number}</span></a>' in main
    assert main.count("<li><p>one thing</p></li>") == len(NOTEBOOKS)
    assert main.count('<code class="docutils literal notranslate"><span class="pre">code</span></code> thing') == len(NOTEBOOKS)


def test_every_page_has_the_side_contents_prev_next_and_a_search_box_that_works_offline(built):
    import re
    for number, name in enumerate(NOTEBOOKS):
        page = _page(built, name)
        assert f'<a class="current reference internal" href="#">{number + 1} · Title {number + 1}</a>' in page
        for other in [*NOTEBOOKS, book.GLOSSARY, book.APPENDIX, book.REFERENCES]:  # the side table of contents
            assert other == name or f'href="{other}.html"' in page, (name, other)
        if number > 0:
            assert re.search(rf'class="left-prev"\s+href="{NOTEBOOKS[number - 1]}.html"', page)
        if number + 1 < len(NOTEBOOKS):
            assert re.search(rf'class="right-next"\s+href="{NOTEBOOKS[number + 1]}.html"', page)
        assert 'name="q"' in page and "searchtools.js" in page
        for image in re.findall(r'<img [^>]*src="([^"]+)"', page):  # figures are files beside the pages
            assert (built["html"] / image).is_file()
        assert len(re.findall(r'<img [^>]*src="_images/', page)) >= 1, f"{name} shows no figure"
        # nothing the page loads comes from the network
        loaded = re.findall(r'<(?:script|link|img|iframe)\b[^>]*(?:src|href)="([^"]+)"', page)
        assert not [u for u in loaded if u.startswith(("http:", "https:", "//"))], name
        assert "https://unpkg.com" not in page and "MathJax" not in page
    index = (built["html"] / "searchindex.js").read_text()
    assert "Title 3" in index and "glossary" in index


def test_a_page_hides_scaffolding_shows_its_settings_and_one_toggle_per_answer(built):
    name = NOTEBOOKS[1]
    page = _page(built, name)
    main = page[page.index("<main"):page.index("</main>")]
    assert "QUICK = False  #" not in main and "{&#x27;a&#x27;: 1}" not in main and "display(Markdown(text))" not in main
    assert "The rate <span class=\"math notranslate\"><math" in main and "$u_A$" not in main
    read = _text(main)
    assert "import milesbook as mb" in read and "toggle" in main  # hide-input: behind a toggle
    # the settings box, read from the parameters cell (never executed), and the command to run it
    assert "Settings on this page" in read and "EPOCHS 30 epochs per run" in read
    assert f"milesbook notebooks --only {name[:2]}" in read
    assert "Time on the machine that made this page (2 CPU cores, milesbook book --execute" in read
    assert ("the quick setting took 2 min from scratch; executing the full setting took 10 min (of its 6 runs, 2 "
            "trained then, the others loaded where an earlier execution had made them); training them took 80 s, as "
            "the runs recorded") in read
    assert main.count("admonition-title\">Answer ") == 2 and "Answer 1</p>" in main and "Answer 2</p>" in main
    assert main.index("How many?") < main.index("Answer 2</p>") and main.index("Answer 1</p>") < main.index("How many?")
    lecturer = _page(built, name, "lecturer")
    assert "Answer 1" not in lecturer and "How many?" in lecturer and "Because" not in lecturer
    assert "without their answers" in (built["lecturer"] / "index.html").read_text()


def test_glossary_methods_and_references_pages(built):
    glossary = (built["html"] / f"{book.GLOSSARY}.html").read_text()
    assert "Conditional utilization rate" in glossary and "<math" in glossary
    references = (built["html"] / f"{book.REFERENCES}.html").read_text()
    assert "2510.17394" in references and "Guerra-Manzanares" in references
    first = references.index("Guerra-Manzanares")
    assert all(first <= references.index(a) for a in ("Peng", "Wei") if a in references)
    methods = (built["html"] / f"{book.APPENDIX}.html").read_text()
    from milesbook.methods import METHODS
    for name in METHODS:
        if name != "unimodal":
            assert f'<span class="pre">{name}</span>' in methods, name
    assert 'href="references.html#id' in methods  # each method cites its paper on the references page


def test_pages_hold_no_path_of_this_machine(built):
    root = str(notebooks.notebooks_dir().parent.resolve())
    for page in built["html"].glob("*.html"):
        text = page.read_text()
        assert root not in text and str(built["executed"]) not in text and "/tmp/" not in text, page.name


def test_one_quick_notebook_makes_the_book_quick(tmp_path):
    folder = tmp_path / "executed"
    folder.mkdir()
    for number in range(1, len(NOTEBOOKS) + 1):
        write_notebook(folder, number, quick=number == 3)
    assert book.setting(folder) == book.QUICK
    chapters = book._read_all(folder)
    assert "quick (CI) setting — figures from tiny runs" in book._index(chapters, [n for n, _ in chapters], folder, True)


def test_readable_provenance_says_a_mixed_group_without_its_record():
    line = ('Made under: milesbook 0.2.0 (results v2, commit 6e6e7232bc), torch 2.11.0, 1 thread; data halves '
            '637dbac5 (15 of 18 runs). These runs MIX provenance: 3 run(s) differ: encoders (most {"right": '
            '{"class": "__main__.Net"}}, these None), threads (most 1, these 2). (18 runs)')
    said = book.readable_provenance(line)
    assert said == ("milesbook 0.2.0 (results v2, commit 6e6e7232bc), torch 2.11.0, 1 thread; data halves 637dbac5 "
                    "(15 of 18 runs); 3 of the 18 runs differ in encoders, threads.")
    assert book.readable_provenance("Made under: milesbook 0.2.0, 1 thread.") == "milesbook 0.2.0, 1 thread."


def test_exercises_split_into_one_answer_each_and_must_pair():
    cell = ("## Exercises\n\n1. **A.** first\n   line two\n2. **B.** second\n\n<details>\n<summary>Answer</summary>"
            "\n\n1. one\n   - a sub-point\n2. two\n\n</details>\n")
    text = book.per_exercise_answers(cell)
    assert text.index("1. **A.** first\n   line two") < text.index("::::{admonition} Answer 1") < text.index("2. **B.**")
    assert "::::{admonition} Answer 1\n:class: dropdown\n\none\n- a sub-point\n::::" in text
    assert text.rstrip().endswith("::::{admonition} Answer 2\n:class: dropdown\n\ntwo\n::::")
    assert "Answer" not in book.per_exercise_answers(cell, answers=False) and "second" in book.per_exercise_answers(cell, False)
    with pytest.raises(UserError, match="2 questions but 1 numbered answers"):
        book.per_exercise_answers(cell.replace("2. two\n", ""))


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
        write_notebook(Path(out), NOTEBOOKS.index(names[0]) + 1, quick=quick)
        copy = nbformat.read(Path(out) / f"{names[0]}.ipynb", as_version=4)
        copy.metadata["papermill"].update(duration=60.0 if quick else 600.0,  # as papermill records them
                                          start_time="2026-01-01T00:00:00+00:00")
        nbformat.write(copy, Path(out) / f"{names[0]}.ipynb")
        notebooks.record(checkout / "notebooks" / parameters["OUT_DIR"], names[0][:2], {"accuracy": 0.5})
        trained = checkout / "notebooks" / parameters["OUT_DIR"] / f"{names[0][:2]}-setting" / "seed0"
        trained.mkdir(parents=True, exist_ok=True)
        (trained / "summary.json").write_text(json.dumps({"train_seconds": 30.0}))
        run = checkout / "notebooks" / parameters["OUT_DIR"] / "runs" / names[0]  # a run the chapter trained
        run.mkdir(parents=True, exist_ok=True)
        (run / provenance.FILE).write_text(json.dumps(provenance.collect("cpu", 1)))
        return [Path(out) / f"{names[0]}.ipynb"]

    monkeypatch.setattr(notebooks, "notebooks_dir", lambda: checkout / "notebooks")
    monkeypatch.setattr(notebooks, "run", fake_run)
    with pytest.raises(UserError, match=f"^{'' if quick else 'the quick timing run: '}{NOTEBOOKS[2]} failed in "
                                        "cell 3 .*the book in .* is unchanged"):
        book.execute(source, quick=quick)
    assert (source / f"{NOTEBOOKS[0]}.ipynb").read_text() == "cached"  # a failure changes nothing cached
    assert not (source / f"{NOTEBOOKS[1]}.ipynb").exists()

    fail["at"], calls[:] = None, []
    earlier = (source.resolve() / "work" if quick else checkout / "runs" / "notebooks") / "04-earlier" / "seed0"
    earlier.mkdir(parents=True)  # a run of chapter 4 an earlier execution made: loaded, not trained
    (earlier / "summary.json").write_text(json.dumps({"train_seconds": 10.0}))
    os.utime(earlier / "summary.json", (1.7e9, 1.7e9))  # 2023, before this execution started
    executed = book.execute(source, quick=quick)
    assert executed == [source.resolve() / f"{name}.ipynb" for name in NOTEBOOKS]
    assert not notebooks.has_outputs(source / f"{NOTEBOOKS[0]}.ipynb")  # kept in the cached form
    assert (source / "figures" / f"{NOTEBOOKS[0]}-1-0.png").is_file()
    work = str(source.resolve() / "work") if quick else "../runs/notebooks"
    timed = [] if quick else calls[:len(NOTEBOOKS)]  # the full setting times the quick one from scratch first
    assert [(names, q) for names, q, _ in timed] == [([name], True) for name in NOTEBOOKS if not quick]
    assert len({parameters["OUT_DIR"] for _, _, parameters in timed}) <= 1 and all(
        parameters["OUT_DIR"] != work for _, _, parameters in timed)
    assert calls[len(timed):] == [([name], quick, {"OUT_DIR": work}) for name in NOTEBOOKS]
    kept = json.loads((source / f"{NOTEBOOKS[3]}.ipynb").read_text())["metadata"]
    assert kept["milesbook"] == {"quick_seconds": None if quick else 60.0, "cores": len(os.sched_getaffinity(0)),
                                 "runs": 2, "trained_here": 1, "train_seconds": 40.0}
    assert not (tmp_path / ".source-timing-quick").exists()  # the quick timing run leaves nothing behind
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


def test_the_cached_form_restores_the_notebook_the_page_is_made_from(tmp_path):
    """`cache` then `_read_all` gives back the executed notebook's cells and outputs, figures included."""
    executed = tmp_path / "executed"
    executed.mkdir()
    for number in range(1, len(NOTEBOOKS) + 1):
        write_notebook(executed, number)
    source = tmp_path / "cached"
    for name in NOTEBOOKS:
        book.cache(executed / f"{name}.ipynb", source)
        assert not notebooks.has_outputs(source / f"{name}.ipynb")
        assert (source / "figures" / f"{name}-1-0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((source / "outputs" / f"{name}.json").read_text())["1"]["execution_count"] == 1
    for (name, direct), (_, cached) in zip(book._read_all(executed), book._read_all(source)):
        assert [c.get("outputs") for c in book.for_readers(direct, name=name).cells] == \
            [c.get("outputs") for c in book.for_readers(cached, name=name).cells]


def test_formulas_become_mathml_and_a_formula_mathml_cannot_express_fails():
    from sphinx.errors import ExtensionError

    from milesbook.book_sphinx import mathml
    assert "<mfrac>" in mathml("u_A = \\frac{a}{b}", False) and 'display="block"' in mathml("\\delta", True)
    with pytest.raises(ExtensionError, match=r"cannot render the formula .*\\nosuch"):
        mathml("u = \\nosuch x", False)
    with pytest.raises(ExtensionError, match="cannot render the formula"):
        mathml("\\begin{aligned} a &= b \\end{aligned}", True)


def test_launch_buttons_and_install_cell_follow_the_declared_repository():
    assert book._config(None)["launch_buttons"]["colab_url"] == "" and "repository" not in book._config(None)
    declared = book._config("https://github.com/someone/milesbook")
    assert declared["repository"] == {"url": "https://github.com/someone/milesbook", "path_to_book": "notebooks",
                                      "branch": "main"}
    assert declared["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert '%pip install -q "milesbook[notebooks] @ git+https://github.com/someone/milesbook"' in \
        book.install_cell("https://github.com/someone/milesbook")


def test_install_cell_outside_a_clone_says_how_in_one_line_and_inside_installs_from_it(tmp_path, monkeypatch):
    """Run as a kernel runs it (IPython), in a kernel that lacks milesbook: one line, no traceback."""
    import contextlib
    import io
    import sys

    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    pip_calls = []
    monkeypatch.setattr(shell, "run_line_magic", lambda magic, line, *_: pip_calls.append((magic, line)))
    monkeypatch.setitem(sys.modules, "milesbook", None)  # `import milesbook` raises ImportError

    def run_in(folder):
        monkeypatch.chdir(folder)
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(shown):
            result = shell.run_cell(book.install_cell(None))
        return result.success, shown.getvalue()

    success, shown = run_in(tmp_path)
    assert not success and pip_calls == []  # it stops "Run all" and installs nothing
    assert shown.strip().splitlines() == [
        "milesbook is not installed in this kernel: clone its repository, run `make demo` there (README) and "
        "open the notebook from that clone"]
    clone = tmp_path / "clone"
    (clone / "milesbook").mkdir(parents=True)
    (clone / "milesbook" / "notebooks.py").write_text("")
    (clone / "notebooks").mkdir()
    success, shown = run_in(clone / "notebooks")
    assert success and shown == "" and pip_calls == [("pip", 'install -q "..[notebooks]"')]


def test_every_method_says_what_it_does_and_cites_a_paper_in_the_bibliography():
    import re

    from milesbook.methods import METHODS
    keys = set(re.findall(r"^@\w+\{([^,]+),", book.BIBLIOGRAPHY.read_text(), re.M))
    assert re.search(r"^@\w+\{([^,]+),", book.BIBLIOGRAPHY.read_text(), re.M).group(1) == "miles2025"  # first
    for name, method in METHODS.items():
        assert 20 < len(method.description) < 200 and "|" not in method.description, name
        assert method.papers and set(method.papers) <= keys, name
    summaries = [m.description for m in METHODS.values()]
    assert len(set(summaries)) == len(summaries)  # each its own line, none inherited by mistake


def test_a_citation_the_bibliography_lacks_fails_the_build_in_one_line(tmp_path):
    folder = tmp_path / "executed"
    folder.mkdir()
    for number in range(1, len(NOTEBOOKS) + 1):
        write_notebook(folder, number, bullets="- cites {cite:p}`nosuchpaper2099`\n- two")
    with pytest.raises(UserError) as error:
        book.render(folder, tmp_path / "html")
    assert "the book did not build" in str(error.value) and "nosuchpaper2099" in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / "html").exists()


def test_run_box_says_where_the_sliders_are_and_when_a_chapter_trains_nothing():
    notebook = new_notebook(cells=[new_markdown_cell("# 3 · T"), new_code_cell(
        "QUICK = False  # the CI setting\nWIDGETS = True  # sliders", metadata={"tags": ["parameters"]})])
    notebook.metadata["papermill"] = {"parameters": {"QUICK": False, "WIDGETS": False}, "duration": 12.0}
    notebook.metadata["milesbook"] = {"quick_seconds": 30.0, "cores": 2, "runs": 0, "trained_here": 0,
                                      "train_seconds": 0.0}
    box = book.settings_box(notebook, "03_miles")
    assert "Live, its sliders redraw the figures for any setting of its grid; *Move the sliders* below" in box
    assert ("the quick setting took 30 s from scratch; executing the full setting took 12 s; it keeps no runs of "
            "its own (it reads those its parameters name, training any that are missing).") in box
    assert "| `WIDGETS`" not in box  # scaffolding: a headless execution switches the sliders off
    notebook.metadata.pop("milesbook")
    assert "executing the full setting took 12 s (runs already made are loaded, not trained again)." in \
        book.settings_box(notebook, "03_miles")  # a page executed before its runs were counted


@pytest.mark.parametrize("runs, here, said", [
    (1, 1, " (it trained its 1 run then); training it took 80 s, as the runs recorded"),
    (6, 6, " (it trained its 6 runs then); training them took 80 s, as the runs recorded"),
    (6, 0, " (its 6 runs loaded where an earlier execution had made them); training them took 80 s"),
    (6, 2, " (of its 6 runs, 2 trained then, the others loaded where an earlier execution had made them)")])
def test_run_box_says_which_runs_were_trained_and_which_loaded(runs, here, said):
    assert book._runs_phrase({"runs": runs, "trained_here": here, "train_seconds": 80.0}).startswith(said)


def test_quick_book_pages_say_the_quick_command_and_no_time_from_scratch():
    notebook = new_notebook(cells=[new_markdown_cell("# 1 · T")])
    notebook.metadata["papermill"] = {"parameters": {"QUICK": True}, "duration": 20.0}
    notebook.metadata["milesbook"] = {"quick_seconds": None, "cores": 2, "runs": 3, "trained_here": 3,
                                      "train_seconds": 9.0}
    box = book.settings_box(notebook, NOTEBOOKS[0])
    assert ("(2 CPU cores, `milesbook book --quick`): executing this page took 20 s (it trained its 3 runs then); "
            "training them took 9 s, as the runs recorded.") in box and "from scratch" not in box
