"""REPORT.html: the Markdown report as one self-contained HTML file (figures inlined, no external file).

The Markdown is converted by the ``markdown`` package (tables extension); every ``<img src="...">`` that
points at a PNG of the report folder is replaced by a ``data:image/png;base64`` URI, so the file can be
mailed or attached as it is. Links to the tables' CSV/LaTeX files stay relative.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import markdown

from salbench.store.outputs import write_text

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #c8c8c8; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td { text-align: right; }
td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
code { background: #f4f4f4; padding: 0 0.2em; }
h1, h2, h3 { border-bottom: 1px solid #e0e0e0; padding-bottom: 0.2em; }
"""


def _inline(html: str, folder: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        path = folder / match.group(2)
        if path.suffix.lower() != ".png" or not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:image/png;base64,{data}{match.group(3)}"

    return re.sub(r'(<img[^>]*\bsrc=")([^":]+)(")', replace, html)


def write_html(markdown_path: str | Path) -> Path:
    """Write ``REPORT.html`` beside ``markdown_path`` (its figures inlined); returns its path."""
    md = Path(markdown_path)
    body = markdown.markdown(md.read_text(encoding="utf-8"), extensions=["tables", "sane_lists"])
    title = "salbench report"
    page = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{_inline(body, md.parent)}\n</body>\n</html>\n"
    )
    out = md.with_suffix(".html")
    write_text(out, page)
    return out
