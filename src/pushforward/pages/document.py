"""A self-contained HTML document: a title, a style sheet and body blocks, with every image and
script inlined, so the page opens offline and fetches nothing.

The gallery (:mod:`pushforward.gallery`) and the explorer (:mod:`pushforward.explore`) both write
such pages; the gallery also embeds explorer pages in its own. This module sits below both (it
imports only the standard library and :mod:`pushforward.core`), so neither imports the other to
share it.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pushforward.core import atomic_write_bytes

__all__ = ["BASE_CSS", "Page", "embedded_figure", "embedded_page", "table"]

BASE_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;padding:0 1em;color:#222}"
    "figure{margin:0}figcaption{font-size:.85em;color:#555}"
)
"""The style every page starts from; a page's own ``css`` follows it and may override it."""

_MIME = {".gif": "image/gif", ".png": "image/png", ".svg": "image/svg+xml"}

_NUMERIC = re.compile(r"^[−+-]?[\d,.]+( ± [\d.]+)?( / [\d,]+)?$")
"""A cell that holds a number (``1,500``, ``−3.2``, ``0.41 ± 0.02``, ``7 / 8``): right-aligned."""


@dataclass
class Page:
    """One HTML document: ``title`` (also its heading), ``css`` after :data:`BASE_CSS`, and
    ``body``, HTML blocks written in order after the heading."""

    title: str
    css: str = ""
    body: list[str] = field(default_factory=list)

    def to_html(self) -> str:
        """Return the document as one HTML string."""
        title = html.escape(self.title)
        head = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{title}</title>",
            f"<style>{BASE_CSS}{self.css}</style></head><body>",
            f"<h1>{title}</h1>",
        ]
        return "\n".join([*head, *self.body, "</body></html>"]) + "\n"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the document atomically (UTF-8) to ``path`` and return it."""
        path = Path(path)
        atomic_write_bytes(path, self.to_html().encode("utf-8"))
        return path


def embedded_figure(path: Path, caption: str) -> str:
    """Return a ``<figure>`` holding the image file ``path`` (PNG, GIF or SVG) as a data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = _MIME.get(path.suffix.lower(), "image/png")
    cap = html.escape(caption)
    return (
        f'<figure><img alt="{cap}" src="data:{mime};base64,{data}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


def embedded_page(page: str, caption: str, height: int) -> str:
    """Return a ``<figure>`` holding another whole HTML document, scripts and all, inline (an
    iframe's ``srcdoc``) at ``height`` pixels."""
    cap = html.escape(caption)
    return (
        f'<figure class="embedded"><iframe title="{cap}" height="{height}" '
        f'srcdoc="{html.escape(page)}"></iframe><figcaption>{cap}</figcaption></figure>'
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """Return an HTML table of text cells (escaped); numeric cells are right-aligned."""
    parts = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in header)]
    parts.append("</tr></thead><tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>' if _NUMERIC.match(c)
            else f"<td>{html.escape(c)}</td>"
            for c in row
        )  # fmt: skip
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)
