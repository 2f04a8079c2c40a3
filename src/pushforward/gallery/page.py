"""The gallery's page: sections of figures, tables and embedded explorer pages, one HTML file.

The document itself (style, inlined images, tables) is :class:`pushforward.pages.Page`, shared
with the explorer; this module adds what the gallery's page holds: its sections, a table of
contents, the training bars of the runs behind it, and a footer with the time each part took.
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pushforward.core import atomic_write_bytes, save_figure
from pushforward.pages import Page, embedded_figure, embedded_page, table
from pushforward.train import Reporters, TrainConfig, fit, to_device

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pushforward.train import Progress as TrainingProgress

__all__ = ["Report", "Section"]

_CSS = """
body{margin:2em auto}h1{font-size:1.6em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{max-width:520px}
figure img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;
font-size:.9em;text-align:left}td.num{text-align:right}th{background:#f4f4f4}footer{margin-top:3em;color:#888;
font-size:.8em}nav ol{columns:2}figure.embedded{max-width:none;margin-top:1em}
figure.embedded iframe{width:100%;border:1px solid #ddd}
"""


@dataclass
class Section:
    """One part of the report: a heading, a short explanation (HTML), figures (caption, image
    file), tables (header, rows of text cells) and embedded explorer pages (caption, HTML,
    height in pixels)."""

    title: str
    text: str
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    pages: list[tuple[str, str, int]] = field(default_factory=list)

    def to_html(self, anchor: str) -> str:
        """Return the section as HTML, its ``<section>`` element identified by ``anchor``."""
        parts = [
            f'<section id="{anchor}"><h2>{html.escape(self.title)}</h2>',
            f"<p>{self.text}</p>",
        ]
        parts += [table(header, rows) for header, rows in self.tables]
        parts.append('<div class="figs">')
        parts += [embedded_figure(path, caption) for caption, path in self.figures]
        parts.append("</div>")
        parts += [embedded_page(page, caption, height) for caption, page, height in self.pages]
        parts.append("</section>")
        return "\n".join(parts)


@dataclass
class Report:
    """The gallery's page: figures saved under ``folder`` and the sections that show them."""

    folder: Path
    title: str = "pushforward: the lecture's gallery"
    sections: list[Section] = field(default_factory=list)
    bars: Callable[[str], TrainingProgress] | None = None
    """Makes the progress reporter (the CLI's bar) of one training run from its label."""
    timings: list[tuple[str, float]] = field(default_factory=list)
    """(part, wall seconds) of each part of the gallery, shown in the page's footer."""
    beside: list[tuple[str, float]] = field(default_factory=list)
    """(part, wall seconds) of the parts that ran in a second process meanwhile."""
    elapsed: float | None = None
    """Wall seconds of the whole run (the sum of :attr:`timings` when None)."""
    device: str = "cpu"
    """Where the gallery's models train (a name :func:`~pushforward.train.resolve_device`
    takes); they come back to the CPU for the figures, so the page is drawn there."""

    def fit(self, model: Any, x: Tensor, cfg: TrainConfig, **kwargs: Any) -> list[dict[str, Any]]:
        """Train ``model`` on x (n, d) with ``cfg`` on :attr:`device` (:func:`~pushforward.train.
        fit`, whose keywords ``kwargs`` are), bring it back to the CPU and return its history."""
        history = fit(model, x, dataclasses.replace(cfg, device=self.device), **kwargs)
        to_device(model, "cpu")
        return history

    def training(self, label: str, *also: TrainingProgress | None) -> TrainingProgress | None:
        """Return what one training run of the gallery reports to: a bar labelled ``label``
        (when :attr:`bars` is set) and the reporters ``also`` (None entries skipped)."""
        bar = self.bars(label) if self.bars is not None else None
        reporters = [r for r in (bar, *also) if r is not None]
        if not reporters:
            return None
        return reporters[0] if len(reporters) == 1 else Reporters(*reporters)

    def figure(self, section: Section, fig: Figure, name: str, caption: str) -> None:
        """Save ``fig`` as ``figures/NAME.png`` and show it in ``section`` with a caption."""
        path = save_figure(fig, self.folder / "figures" / f"{name}.png")
        section.figures.append((caption, path))

    def animation(self, section: Section, gif: bytes, name: str, caption: str) -> None:
        """Save an animated GIF as ``figures/NAME.gif`` and show it in ``section``."""
        path = self.folder / "figures" / f"{name}.gif"
        atomic_write_bytes(path, gif)
        section.figures.append((caption, path))

    def to_html(self) -> str:
        """Return the page as one HTML string with every figure embedded (base64)."""
        nav = ["<nav><ol>"]
        nav += [
            f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>'
            for i, s in enumerate(self.sections)
        ]
        nav.append("</ol></nav>")
        body = ["".join(nav), *(s.to_html(f"s{i}") for i, s in enumerate(self.sections))]
        body.append(self._footer())
        return Page(self.title, css=_CSS, body=body).to_html()

    def _footer(self) -> str:
        """The footer: when the page was made and how long each part took."""
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        took = ""
        if self.timings:
            total = self.elapsed if self.elapsed is not None else sum(t for _, t in self.timings)
            took = f" It took {total:.0f} s: {_listed(self.timings)}."
            if self.beside:
                took += f" Meanwhile, in a second process: {_listed(self.beside)}."
        return f"<footer>Made by pushforward on {stamp} UTC.{took}</footer>"

    def write(self, name: str = "report.html") -> Path:
        """Write the page atomically to ``folder/name`` and return its path."""
        path = self.folder / name
        atomic_write_bytes(path, self.to_html().encode("utf-8"))
        return path


def _listed(timings: list[tuple[str, float]]) -> str:
    """``part 12 s, part 3 s``: each part's wall time, in whole seconds."""
    return ", ".join(f"{html.escape(name)} {t:.0f} s" for name, t in timings)
