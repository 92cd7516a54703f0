"""The Sphinx extension the book is built with (`milesbook book`, Jupyter Book 1): formulas become
MathML at build time, so a page needs no script and no network to show them, and the one network
address Jupyter Book writes into every page (sphinx-thebe's, for live code we do not offer) is left
out. A formula MathML cannot express fails the build with its text: a page must not show raw TeX."""
from __future__ import annotations

from docutils import nodes
from sphinx.errors import ExtensionError


def mathml(tex: str, display: bool) -> str:
    """`tex` as a MathML element (latex2mathml); ExtensionError naming it when it cannot be converted,
    including what latex2mathml passes through instead of failing (an unknown command, a bare `&` of an
    aligned environment)."""
    import re

    from latex2mathml.converter import convert
    try:
        converted = convert(tex.strip(), display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises plain exceptions on what it cannot parse
        raise ExtensionError(f"the book cannot render the formula {tex.strip()!r} ({error or type(error).__name__}); "
                             "write it with commands MathML supports") from None
    unknown = re.search(r">(\\[a-zA-Z]+|&amp;|&)<", converted)
    if unknown:
        raise ExtensionError(f"the book cannot render the formula {tex.strip()!r} ({unknown.group(1)} is not "
                             "understood); write it with commands MathML supports")
    return converted


def _inline(self, node):
    self.body.append(f'<span class="math notranslate">{mathml(node.astext(), False)}</span>')
    raise nodes.SkipNode


def _block(self, node):
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node.get("number"):
        self.body.append(f'<span class="eqno">({node["number"]})')
        self.add_permalink_ref(node, "Link to this equation")
        self.body.append("</span>")
    self.body.append(mathml(node.astext(), True) + "</div>\n")
    raise nodes.SkipNode


def _without_thebe(app, pagename, templatename, context, doctree):
    """Drop sphinx-thebe's script and its inline unpkg.com address from the page (thebe is off)."""
    def kept(script) -> bool:
        body = (getattr(script, "attributes", {}) or {}).get("body", "") or ""
        return "THEBE_JS_URL" not in body and "sphinx-thebe" not in str(getattr(script, "filename", "") or "")
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if kept(s)]


def _without_thebe_config(app, doctree, docname):
    for node in list(doctree.findall(nodes.raw)):
        if "x-thebe-config" in node.astext() or "kernelName =" in node.astext():
            node.parent.remove(node)


def setup(app):
    app.add_html_math_renderer("mathml", (_inline, None), (_block, None))
    app.connect("html-page-context", _without_thebe)
    app.connect("doctree-resolved", _without_thebe_config, priority=900)  # after sphinx-thebe adds it (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
