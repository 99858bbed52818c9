"""Every ```python block of every docs page and of README.md runs here, and the docs build
with warnings as errors.

- One test per page: its blocks run in order in one namespace (a later block uses what an
  earlier one defined), in a fresh temporary folder (files a page saves land there).
- A block preceded by ``<!-- skip: reason -->`` (the last non-blank line before its opening
  fence) is not run; the reason is required (e.g. ``<!-- skip: needs a GPU -->``).
- A block preceded by ``<!-- cupy: reason -->`` needs the cupy backend: it runs where that
  works (a GPU, or the CuPy stand-in the test suite puts in place of CuPy) and is skipped
  elsewhere.
- Pages are found by globbing docs/**/*.md, so a new page is tested without listing it here.
- A failing block is reported as ``docs/page.md:LINE``, with the traceback pointing at the
  page's own lines.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
RUNNABLE = {"python", "py"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
SKIP = re.compile(r"^\s*<!--\s*(?P<kind>skip|cupy)\b\s*(?::(?P<reason>.*?))?-->\s*$")


class CodeBlock:
    """A fenced code block: ``language``, ``source``, the 1-based ``line`` of its first code
    line, ``skip`` (the skip marker's reason, or None) and ``needs_cupy`` (a cupy marker)."""

    def __init__(self, language, source, line, skip, needs_cupy=False):
        self.language, self.source, self.line, self.skip = language, source, line, skip
        self.needs_cupy = needs_cupy

    def __repr__(self):
        return f"CodeBlock({self.language!r}, line={self.line}, skip={self.skip!r})"


def code_blocks(text, where="page"):
    """Every fenced block of the Markdown ``text``, in order. A skip marker without a reason,
    or a fence that never closes, is a ValueError naming ``where`` and the line."""
    lines = text.splitlines()
    blocks = []
    position = 0
    while position < len(lines):
        opening = FENCE.match(lines[position])
        if not opening:
            position += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"] else ""
        kind, skip = _marker(lines, position, where)
        body = []
        end = position + 1
        while end < len(lines) and not _closes(lines[end], fence):
            line = lines[end]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            end += 1
        if end == len(lines):
            raise ValueError(f"{where}:{position + 1}: the {fence} fence is never closed")
        blocks.append(CodeBlock(language, "\n".join(body) + "\n", position + 2,
                                skip if kind == "skip" else None, needs_cupy=kind == "cupy"))
        position = end + 1
    return blocks


def _closes(line, fence):
    stripped = line.strip()
    return stripped.startswith(fence[0] * len(fence)) and stripped.strip(fence[0]) == ""


def _marker(lines, fence_index, where):
    """(kind, reason) of the marker before the fence at ``fence_index``: ("skip" or "cupy",
    its reason), or (None, None) without one."""
    previous = fence_index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    marker = SKIP.match(lines[previous]) if previous >= 0 else None
    if marker is None:
        return None, None
    reason = (marker["reason"] or "").strip()
    if not reason:
        raise ValueError(f"{where}:{previous + 1}: a {marker['kind']} marker needs a reason, "
                         "e.g. <!-- skip: needs a GPU -->")
    return marker["kind"], reason


def run_blocks(blocks, filename, namespace=None):
    """Run the runnable, unskipped ``blocks`` in order in one namespace (returned). Line
    numbers in a traceback are the page's: each block is compiled padded to its line."""
    namespace = {"__name__": "__docs__"} if namespace is None else namespace
    cupy_works = None
    for block in blocks:
        if block.language not in RUNNABLE or block.skip is not None:
            continue
        if block.needs_cupy:
            if cupy_works is None:
                import nnback

                cupy_works = nnback.available_backends()["cupy"] is None
            if not cupy_works:
                continue
        code = compile("\n" * (block.line - 1) + block.source, str(filename), "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            line = _failing_line(exc.__traceback__, str(filename)) or block.line
            raise AssertionError(
                f"{filename}:{line}: {type(exc).__name__}: {exc} (in the code block starting "
                f"at line {block.line})") from exc
    return namespace


def _failing_line(traceback, filename):
    """The last line of ``filename`` that the traceback passes through."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _page_id(path):
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_code_blocks_of_page_run(page, tmp_path, monkeypatch):
    blocks = code_blocks(page.read_text(encoding="utf-8"), where=_page_id(page))
    runnable = [block for block in blocks if block.language in RUNNABLE]
    if not runnable:
        pytest.skip(f"{_page_id(page)} has no python code blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    run_blocks(runnable, page)


# -- the block reader itself -----------------------------------------------------------------
PAGE = """\
# A page

```python
total = 1
```

Some prose.

<!-- skip: needs a GPU -->

```python
raise RuntimeError("a skipped block must not run")
```

```bash
exit 1
```

1. In a list:

    ```python
    total += 41
    ```
"""


def test_blocks_share_a_namespace_and_skip_marked_blocks_do_not_run():
    blocks = code_blocks(PAGE)
    assert [(block.language, block.skip) for block in blocks] == [
        ("python", None), ("python", "needs a GPU"), ("bash", None), ("python", None)]
    assert run_blocks(blocks, "page.md")["total"] == 42


def test_failing_block_is_reported_with_its_page_line():
    page = "# Title\n\n```python\nx = 1\n\nx = 1 / 0\n```\n"
    with pytest.raises(AssertionError, match=r"page\.md:6: ZeroDivisionError: .* starting at "
                                             r"line 4") as caught:
        run_blocks(code_blocks(page), "page.md")
    traceback = caught.value.__cause__.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    assert traceback.tb_lineno == 6


def test_skip_marker_without_reason_is_rejected():
    with pytest.raises(ValueError, match="page.md:1: a skip marker needs a reason"):
        code_blocks("<!-- skip -->\n```python\npass\n```\n", where="page.md")
    with pytest.raises(ValueError, match="page.md:1: a cupy marker needs a reason"):
        code_blocks("<!-- cupy -->\n```python\npass\n```\n", where="page.md")


def test_cupy_blocks_run_where_the_cupy_backend_works(monkeypatch):
    import nnback

    page = "```python\nran = []\n```\n<!-- cupy: needs a GPU -->\n```python\nran.append(1)\n```\n"
    blocks = code_blocks(page)
    assert [block.needs_cupy for block in blocks] == [False, True]
    for reason, expected in ((None, [1]), ("no GPU here", [])):
        monkeypatch.setattr(nnback, "available_backends", lambda: {"cupy": reason})
        assert run_blocks(blocks, "page.md")["ran"] == expected


def test_unclosed_fence_is_rejected():
    with pytest.raises(ValueError, match="never closed"):
        code_blocks("```python\npass\n", where="page.md")


# -- the site --------------------------------------------------------------------------------
def test_docs_build_strict_with_api_reference(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason="mkdocstrings[python] is not installed: pip install '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
         "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for page in ("tutorial", "faq", "backends", "cli", "api"):
        assert (site / page / "index.html").is_file(), f"{page} was not built"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # the reference is generated from the docstrings, not written by hand
    import nnback

    assert " ".join(nnback.MLP.__doc__.split()[:4]) in api
    assert " ".join(nnback.Sequential.fit.__doc__.split()[:4]) in api
    assert 'id="nnback.Sequential.fit"' in api


def test_loss_curve_script_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install "
                                             "'.[docs]'")
    output = tmp_path / "curves.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "plot_loss_curves.py"), "--output", str(output)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

