"""The five sections on the Gaussian mixtures, run as one chain of parts per mixture.

Each mixture (ring8, grid25) is one independent chain: the VAE under N(0, I) and under a
VampPrior, then the GAN, the flow and flow matching on the VAE's data, then every model's
fidelity to the truth. A chain always runs on one thread, so it makes the same figures and rows
wherever it runs (here or in the second process of :mod:`pushforward.gallery.processes`);
:func:`mixture_sections` joins the chains into the page's sections.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.fidelity import (
    FIDELITY_HEADER,
    Truth,
    fidelity_row,
    fidelity_section,
)
from pushforward.gallery.sections.flow import flow_mixture, flow_section
from pushforward.gallery.sections.fm import fm_mixture, fm_section
from pushforward.gallery.sections.gan_mixtures import GAN_HEADER, gan_mixture, gan_section
from pushforward.gallery.sections.mixtures import mixtures_section, vae_mixture, vamp_mixture

__all__ = ["MIXTURES", "MIXTURE_SECTIONS", "Chain", "mixture_chain", "mixture_sections", "threads"]

MIXTURES = ("ring8", "grid25")
"""The mixtures of the five sections, one chain each."""

MIXTURE_SECTIONS = ("mixtures", "gan", "flow", "fm", "fidelity")
"""The keys of the five sections, in the page's order."""


@dataclass
class Chain:
    """What one mixture's chain of parts left for the five mixture sections: each section's
    figures (saved under the report's folder), explorer pages and table rows, and how long each
    part took."""

    name: str
    parts: dict[str, Section] = field(default_factory=dict)
    rows: dict[str, list[list[str]]] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore the count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def mixture_chain(report: Report, name: str, quick: bool, seed: int,
                  say: Callable[[str], None] | None = None) -> Chain:  # fmt: skip
    """Run the five mixture parts on mixture ``name`` in order, on one thread; ``say`` is told
    each part's name as it starts."""
    chain = Chain(name, {k: Section("", "") for k in MIXTURE_SECTIONS})

    def part(key: str, label: str, work: Callable[[Section], Any]) -> Any:
        if say is not None:
            say(f"    {name}: {label}")
        start = time.perf_counter()
        out = work(chain.parts[key])
        chain.timings.append((f"{label} ({name})", time.perf_counter() - start))
        return out

    with threads(1):
        ds, vae = part("mixtures", "Gaussian mixtures",
                       lambda s: vae_mixture(report, s, name, quick, seed))  # fmt: skip
        vamp = part("mixtures", "VampPrior VAE",
                    lambda s: vamp_mixture(report, s, name, ds, quick, seed))  # fmt: skip
        gan, chain.rows["gan"] = part(
            "gan", "GAN on the mixtures",
            lambda s: gan_mixture(report, s, name, ds, vae, quick, seed),
        )  # fmt: skip
        flow = part("flow", "flows", lambda s: flow_mixture(report, s, name, ds, quick, seed))
        fm = part("fm", "flow matching", lambda s: fm_mixture(report, s, name, ds, quick, seed))
        models = [("VAE, N(0, I) prior", vae), ("VAE, VampPrior (the default)", vamp),
                  ("GAN", gan), ("flow", flow), ("flow matching", fm),
                  ("truth", Truth(ds.distribution))]  # fmt: skip
        chain.rows["fidelity"] = part(
            "fidelity", "fidelity to the truth",
            lambda s: [fidelity_row(name, label, m, ds, quick=quick, seed=seed)
                       for label, m in models],
        )  # fmt: skip
    return chain


def mixture_sections(chains: list[Chain], digits: Section, quick: bool) -> list[Section]:
    """Return the five mixture sections, each chain's figures, pages and rows in the order of
    ``chains``; the flows' section ends with ``digits`` (the flow on digits)."""
    sections = {"mixtures": mixtures_section(), "gan": gan_section(quick),
                "flow": flow_section(quick), "fm": fm_section(quick),
                "fidelity": fidelity_section(quick)}  # fmt: skip
    for key, sec in sections.items():
        for chain in chains:
            sec.figures += chain.parts[key].figures
            sec.pages += chain.parts[key].pages
        if key == "gan":
            sec.tables.append((GAN_HEADER, [r for c in chains for r in c.rows["gan"]]))
        elif key == "flow":
            sec.figures += digits.figures
            sec.tables += digits.tables
        elif key == "fidelity":
            sec.tables.append((FIDELITY_HEADER, [r for c in chains for r in c.rows["fidelity"]]))
    return list(sections.values())
