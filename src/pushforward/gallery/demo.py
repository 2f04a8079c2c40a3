"""``pushforward demo``: the lecture's figures regenerated from built-in data into one page.

:func:`run_demo` writes ``report.html`` (every figure embedded) and each raw figure under
``figures/``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pushforward.core import ConfigError
from pushforward.data import datasets
from pushforward.gallery.chain import MIXTURES, Chain, mixture_chain, mixture_sections, threads
from pushforward.gallery.page import Report, Section
from pushforward.gallery.processes import AFTER, BESIDE, Beside
from pushforward.gallery.sections.data import data_section
from pushforward.gallery.sections.encoders import encoders_section
from pushforward.gallery.sections.flow import flow_digits
from pushforward.gallery.sections.gan_digits import gan_digits_section, with_vae_rows
from pushforward.gallery.sections.univariate import dice_section, univariate_section
from pushforward.gallery.sections.vae_digits import vae_digits_section
from pushforward.train import resolve_device

if TYPE_CHECKING:
    from pushforward.train import Progress as TrainingProgress

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    bars: Callable[[str], TrainingProgress] | None = None,
    workers: int = 1,
    device: str = "auto",
) -> Path:
    """Regenerate the lecture's figures from built-in data into ``out``; return the report path.

    ``quick`` uses fewer samples, points and epochs (BENCHMARKS.md gives its time). MNIST is shown
    when its files are found (see :func:`pushforward.data.datasets.find_mnist_folder`).
    ``progress`` is told each part's name as it starts (the library logs it otherwise); ``bars``
    makes the progress reporter of each training run from its label. With ``workers`` = 2, a
    second process (spawned: a script that calls this needs the ``if __name__ == "__main__":``
    guard) makes the encoders' section, the GAN on digits, grid25's part of the mixture
    sections and then the flow on digits from the start,
    while this one makes the others; the page is the same either way, since every part runs on
    one thread. The models train on
    ``device`` (a name :func:`~pushforward.train.resolve_device` takes) and are drawn on the CPU.
    """
    if type(workers) is not int or workers not in (1, 2):
        raise ConfigError(f"workers = {workers!r} is not allowed; use 1 or 2")
    report = Report(Path(out), bars=bars, device=str(resolve_device(device)))
    say = progress or (lambda msg: log.info(msg))
    begin = time.perf_counter()
    # the second process starts first: two opening sections and grid25's chain are its share
    beside = (
        Beside(report.folder, MIXTURES[1], quick, seed, report.device) if workers == 2 else None
    )
    try:
        with threads(1):  # every part on one thread, here and beside: the same page either way
            total, *vae = _opening_sections(report, quick, seed, say, beside is not None)
            chains, digits = _mixtures_and_digits(report, quick, seed, say, total, vae, beside)
    finally:
        if beside is not None:
            beside.close()
    report.sections += mixture_sections(chains, digits, quick)
    report.elapsed = time.perf_counter() - begin
    log.info("the gallery's parts took: %s (beside: %s)", report.timings, report.beside)
    return report.write()


def _timed(report: Report, name: str, work: Callable[[], Any]) -> Any:
    """Run ``work``, add its wall time to the report's footer as ``name`` and return its value."""
    start = time.perf_counter()
    out = work()
    report.timings.append((name, time.perf_counter() - start))
    return out


def _opening_sections(report: Report, quick: bool, seed: int, say: Callable[[str], None],
                      beside: bool) -> tuple[int, str | None, dict[str, Any]]:  # fmt: skip
    """Add the sections before the mixtures to ``report``, one after the other (those
    :data:`BESIDE` names are left to the second process when ``beside``:
    :func:`_mixtures_and_digits` puts them in their places); return how many steps the gallery
    has in all, the MNIST data spec (None without its files) and what the digits' VAE left for
    the GAN's table."""
    n = 20_000 if quick else 100_000
    mnist_dir = datasets.find_mnist_folder()
    mnist = f"mnist:{mnist_dir}" if mnist_dir is not None else None
    trained: dict[str, Any] = {}  # the digits' VAE, compared with their GAN
    steps: list[tuple[str, Callable[[], Section]]] = [
        ("univariate pushforwards", lambda: univariate_section(report, n, seed)),
        ("discrete pushforward", lambda: dice_section(report)),
        ("datasets", lambda: data_section(report, n // 10, seed, mnist)),
        ("PCA and autoencoders", lambda: encoders_section(report, quick, seed)),
        ("VAE on digits", lambda: vae_digits_section(report, quick, seed, mnist, trained)),
        ("GAN on digits", lambda: with_vae_rows(
            gan_digits_section(report, quick, seed, mnist), mnist, trained)),
    ]  # fmt: skip
    total = len(steps) + 2
    for i, (name, step) in enumerate(steps, 1):
        if beside and name in BESIDE:
            say(f"[{i}/{total}] {name}: in the second process")
            continue
        say(f"[{i}/{total}] {name}")
        report.sections.append(_timed(report, name, step))
    return total, mnist, trained


def _mixtures_and_digits(
    report: Report,
    quick: bool,
    seed: int,
    say: Callable[[str], None],
    total: int,
    vae: list[Any],
    beside: Beside | None,
) -> tuple[list[Chain], Section]:
    """Run both mixtures' chains and the flow on digits: the second chain, with the sections
    :data:`BESIDE` names before it and the flow on digits after it, in the second process
    ``beside`` when there is one, else here after the first chain and the flow on digits. Put
    the second process's sections in their places (the GAN's with the rows of ``vae``: the MNIST
    spec and what the digits' VAE left); return the chains and the digits' part."""
    first, second = MIXTURES
    say(f"[{total - 1}/{total}] the Gaussian mixtures: {first} here, {second} "
        + ("in the second process" if beside is not None else "after it"))  # fmt: skip
    chains = [mixture_chain(report, first, quick, seed, say)]
    report.timings += chains[0].timings
    digits = Section("", "")
    if beside is None:
        say(f"[{total}/{total}] flows on digits")
        _timed(report, AFTER, lambda: flow_digits(report, digits, quick, seed))
        chains.append(mixture_chain(report, second, quick, seed, say))
        report.timings += chains[1].timings
    else:
        say(f"[{total}/{total}] flows on digits: in the second process")
        made, chain = _timed(report, "waiting for the second process", beside.result)
        encoders, gan, digits = made["PCA and autoencoders"], made["GAN on digits"], made[AFTER]
        # the page's order: the data sets, the encoders, the VAE on digits, the GAN on digits
        report.sections[3:3] = [encoders]
        report.sections[5:5] = [with_vae_rows(gan, *vae)]
        chains.append(chain)
        report.beside = chain.timings
    return chains, digits
