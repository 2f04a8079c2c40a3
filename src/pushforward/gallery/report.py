"""The lecture's gallery: figures and metric tables gathered into one self-contained HTML page.

:func:`run_demo` is the main job (``pushforward demo``): it regenerates the lecture's figures from
built-in data and writes ``report.html`` (figures embedded) plus each raw figure as a PNG.
"""

from __future__ import annotations

import base64
import contextlib
import html
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from matplotlib.figure import Figure
from torch import Tensor

from pushforward.core import EXACT_LIKELIHOOD, ConfigError, atomic_write_bytes, save_figure
from pushforward.data import datasets
from pushforward.explore import explorer_page
from pushforward.measures import EXAMPLES, two_dice_sum
from pushforward.metrics import ks_critical_value, ks_distance
from pushforward.runs import plots
from pushforward.train import Reporters, SampleSnapshots

if TYPE_CHECKING:
    from pushforward.train import Progress as TrainingProgress

__all__ = ["Report", "Section", "run_demo"]

log = logging.getLogger(__name__)


@dataclass
class Section:
    """One part of the report: a heading, a short explanation, figures, tables and embedded
    explorer pages (caption, HTML, height in pixels)."""

    title: str
    text: str
    figures: list[tuple[str, Path]] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    pages: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class Report:
    """Figures saved under ``folder`` and the sections of the HTML page that shows them."""

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
        """Return the page as one HTML string with every figure embedded as base64 PNG."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            '<nav><ol>',
            *(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>'
              for i, s in enumerate(self.sections)),
            "</ol></nav>",
        ]  # fmt: skip
        for i, s in enumerate(self.sections):
            parts.append(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>')
            parts.append(f"<p>{s.text}</p>")
            for header, rows in s.tables:
                parts.append("<table><thead><tr>")
                parts.extend(f"<th>{html.escape(h)}</th>" for h in header)
                parts.append("</tr></thead><tbody>")
                for row in rows:
                    cells = "".join(
                        f'<td class="num">{html.escape(c)}</td>' if _NUMERIC.match(c)
                        else f"<td>{html.escape(c)}</td>"
                        for c in row
                    )  # fmt: skip
                    parts.append(f"<tr>{cells}</tr>")
                parts.append("</tbody></table>")
            parts.append('<div class="figs">')
            for caption, path in s.figures:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                mime = "image/gif" if path.suffix == ".gif" else "image/png"
                parts.append(
                    f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:{mime};base64,{data}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            parts.append("</div>")
            for caption, page, height in s.pages:  # a page of its own, scripts and all, inline
                parts.append(
                    f'<figure class="explorer"><iframe title="{html.escape(caption)}" '
                    f'height="{height}" srcdoc="{html.escape(page)}"></iframe>'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            parts.append("</section>")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        took = ""
        if self.timings:
            total = self.elapsed if self.elapsed is not None else sum(t for _, t in self.timings)
            each = ", ".join(f"{html.escape(name)} {t:.0f} s" for name, t in self.timings)
            took = f" It took {total:.0f} s: {each}."
            if self.beside:
                each = ", ".join(f"{html.escape(name)} {t:.0f} s" for name, t in self.beside)
                took += f" Meanwhile, in a second process: {each}."
        parts.append(f"<footer>Made by pushforward on {stamp} UTC.{took}</footer></body></html>")
        return "\n".join(parts)

    def write(self, name: str = "report.html") -> Path:
        """Write the page atomically to ``folder/name`` and return its path."""
        path = self.folder / name
        atomic_write_bytes(path, self.to_html().encode("utf-8"))
        return path


# frames of each training animation in the full gallery (8 in --quick): GIF frames are most of
# the animations' cost (BENCHMARKS.md, "The gallery and the test suite")
FRAMES = 12


def _every(epochs: int, quick: bool) -> int:
    """Epochs between the frames of a training animation of ``epochs`` epochs."""
    return max(1, epochs // (8 if quick else FRAMES))


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:520px}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;
font-size:.9em;text-align:left}td.num{text-align:right}th{background:#f4f4f4}footer{margin-top:3em;color:#888;
font-size:.8em}nav ol{columns:2}figure.explorer{max-width:none;margin-top:1em}
figure.explorer iframe{width:100%;border:1px solid #ddd}
"""

_NUMERIC = re.compile(r"^[−+-]?[\d,.]+( ± [\d.]+)?( / [\d,]+)?$")


def _univariate_section(report: Report, n: int, seed: int) -> Section:
    sec = Section(
        "The basic generative story: y = g(z), z uniform",
        "A generative network is a pushforward g#μ: draw z from an easy measure μ and output "
        "g(z). For a one-dimensional g the density of y sums over the preimages of y, "
        "p(y) = Σ p(x)/|g'(x)| over g(x) = y. Each histogram below holds samples of g#μ, "
        "and the red curve is the exact density. The Kolmogorov–Smirnov distance between "
        "samples and the exact CDF stays below the 0.1% critical value.",
    )
    rows = []
    for i, (name, ex) in enumerate(EXAMPLES.items()):
        gen = torch.Generator().manual_seed(seed + i)
        y = ex.make().sample(n, generator=gen)
        ks = ks_distance(y, ex.cdf)
        rows.append([name, ex.title, f"{n:,}", f"{ks:.4f}", f"{ks_critical_value(n):.4f}"])
        fig = plots.density_histogram(y, ex.log_density, title=ex.title, support=ex.support)
        report.figure(sec, fig, f"univariate_{name}", ex.title)
    sec.tables.append((["example", "map", "samples", "KS distance", "0.1% critical"], rows))
    return sec


def _dice_section(report: Report) -> Section:
    y = two_dice_sum()
    sec = Section(
        "Discrete pushforwards, exactly",
        "Pushing two fair dice through g(x₁, x₂) = x₁ + x₂ sums the probability of every "
        f"outcome with the same total, in exact fractions: Pr[Y = 3] = {y.prob(3)}.",
    )
    fig = plots.pmf_bars(y.pmf, title="Y = X₁ + X₂ for two fair dice")
    report.figure(sec, fig, "two_dice", "The exact pmf of the sum of two dice")
    return sec


def _data_section(report: Report, n: int, seed: int, mnist: str | None) -> Section:
    sec = Section(
        "The data the models learn",
        "The 2-D Gaussian mixtures of the PacGAN benchmark (ring8: 8 modes on the unit circle, "
        "std 0.01; grid25: 25 modes on {−4, −2, 0, 2, 4}², std 0.05), two moons, and "
        "handwritten digits: scikit-learn's 8×8 digits, and MNIST when its files are present.",
    )
    rows = []
    for name in ("ring8", "grid25", "moons"):
        ds = datasets.load_data(name, n=n, generator=torch.Generator().manual_seed(seed))
        fig = plots.scatter_2d(ds.x, title=f"{name}: {ds.n:,} points", size=1.0)
        report.figure(sec, fig, f"data_{name}", f"{name}, {ds.n:,} samples")
        rows.append([name, f"{ds.n:,} × {ds.dim}", "—" if ds.labels is None else "yes"])
    specs = ["digits"] + ([mnist] if mnist else [])
    for spec in specs:
        ds = datasets.load_data(spec)
        assert ds.image_shape is not None
        fig = plots.image_grid(ds.x[:64], ds.image_shape, ncols=16, title=f"{ds.name}: first 64")
        report.figure(sec, fig, f"data_{ds.name}", f"{ds.name}: the first 64 of {ds.n:,} images")
        rows.append([ds.name, f"{ds.n:,} × {ds.dim}", "0–9"])
    sec.tables.append((["data", "shape", "labels"], rows))
    return sec


def _encoders_section(report: Report, quick: bool, seed: int) -> Section:
    from pushforward.models.autoencoder import (
        Autoencoder,
        AutoencoderConfig,
        memorisation_experiment,
    )
    from pushforward.models.pca import PCA, PCAConfig
    from pushforward.train import TrainConfig, fit, seeded

    ds = datasets.load_data("digits")
    train, test = datasets.train_test_split(ds, 1500)
    assert ds.image_shape is not None
    sec = Section(
        "Encoders and decoders: PCA and the autoencoder",
        "PCA is the optimal linear encoder: with the (centred) data X = USVᵀ, encoding by "
        "Z = XV_k and decoding by ZV_kᵀ leaves the squared error Σ_{i>k} s_i², and no other "
        "rank-k linear pair does better. A deep autoencoder replaces both maps by networks "
        "f: ℝ^d → ℝ^k and g: ℝ^k → ℝ^d. On scikit-learn's 8×8 digits (1,500 to train, 297 "
        "held out) with k = 2, both give a 2-D code; the non-linear one separates the digits "
        "better. Unregularised, an autoencoder with enough capacity can memorise: with k = 1 "
        "and a large network it stores the training set (f(xᵢ) = 1/i, g(1/i) = xᵢ), so its "
        "training error goes to nearly zero while its held-out error stays large.",
    )
    ks = [1, 2, 8] if quick else [1, 2, 3, 4, 6, 8, 12, 16]
    epochs = 10 if quick else 60
    pca_err, ae_err, ae_models = [], [], {}
    for k in ks:
        pca = PCA(PCAConfig(latent=k)).fit(train.x)
        pca_err.append(pca.reconstruction_error(test.x) / test.n)
        with seeded(seed):
            ae = Autoencoder(AutoencoderConfig(dim=ds.dim, latent=k, loss="l2", hidden=[256, 128]))
        fit(ae, train.x, TrainConfig(epochs=epochs, batch_size=64, seed=seed),
            progress=report.training(f"autoencoder k = {k}"))  # fmt: skip
        ae_err.append(ae.reconstruction_error(test.x))
        ae_models[k] = ae
    fig = plots.error_vs_k(
        {"PCA": (ks, pca_err), "autoencoder (MLP 256-128)": (ks, ae_err)},
        title="held-out reconstruction error against k (digits)",
    )
    report.figure(sec, fig, "error_vs_k", "Held-out squared error per image against latent size k")
    rows = [[str(k), f"{p:.3f}", f"{a:.3f}"] for k, p, a in zip(ks, pca_err, ae_err, strict=True)]
    sec.tables.append((["k", "PCA error", "autoencoder error"], rows))

    pca2, ae2 = PCA(PCAConfig(latent=2)).fit(train.x), ae_models[2]
    with torch.no_grad():
        x = test.x[:16]
        grid = torch.cat([x, pca2.decode(pca2.encode(x)).clamp(0, 1), ae2(x).clamp(0, 1)])
        codes = {"PCA": pca2.encode(test.x), "autoencoder": ae2.encode(test.x)}
    fig = plots.image_grid(grid, ds.image_shape, ncols=16, title="originals · PCA k=2 · AE k=2")
    report.figure(sec, fig, "reconstructions_k2", "Held-out digits, PCA and autoencoder with k = 2")
    for name, z in codes.items():
        fig = plots.scatter_2d(z, labels=test.labels, title=f"{name}: 2-D codes", size=6.0)
        report.figure(sec, fig, f"latent_{name.lower()}", f"{name} codes of held-out digits")

    # at its rate of 3·10⁻³, 600 full-batch steps already store the 20 digits (training error
    # below 1% of the held-out one for seeds 0–5, as 1,500 do)
    r = memorisation_experiment(train.x[:20], test.x, hidden=(256, 256, 256), epochs=600, seed=seed)
    sec.tables.append(
        (
            ["memorisation (k = 1)", "train error", "held-out error", "predict-the-mean error"],
            [[f"{r.n_train} training digits", f"{r.train_error:.4f}", f"{r.test_error:.3f}",
              f"{r.baseline_error:.3f}"]],
        )
    )  # fmt: skip
    return sec


def _vae_digits_section(
    report: Report, quick: bool, seed: int, mnist: str | None, trained: dict[str, Any]
) -> Section:
    from pushforward.metrics import image_quality
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import TrainConfig, fit, seeded

    sec = Section(
        "The VAE: digits with a 2-D latent space",
        "The VAE's encoder gives (μ, ξ) with ξ the log-variance; training samples "
        "z = μ + exp(ξ/2)·ε and steps on R(x, g(z)) + λ·KL(N(μ, e^ξ) ‖ N(0, I)) with R the "
        "binary cross-entropy (a Bernoulli likelihood) and λ = 1, so the loss is the negative "
        "ELBO in nats. With k = 2 the posterior means of held-out digits, coloured by label, "
        "form clusters; the decoded manifold shows g(z) on a grid of z whose coordinates are "
        "spaced by the Gaussian inverse CDF Φ⁻¹, so each cell holds equal prior mass. The table "
        "gives the ELBO and the importance-weighted (IWAE) log-likelihood of held-out digits, and "
        "the Fréchet distance between samples and held-out digits in the feature space of a "
        "small digit classifier trained here (two halves of the real held-out digits score the "
        "floor in brackets), for samples g(z) with z from N(0, I) and with z from a mixture of "
        "Gaussians fitted to the codes of the training digits after training "
        "(<code>--prior gmm</code>, the default of <code>fit vae</code> on images): the "
        "codes' aggregate is not N(0, I), and the mixture draws z where the decoder was "
        "trained. The explorer below decodes the pointer's z in the page, from the "
        "decoder's weights (<code>pushforward explore</code>).",
    )
    sets = [("digits", "digits", 1500, 20 if quick else 150)]
    if mnist is not None:
        sets.append(("MNIST", mnist, 8000, 3 if quick else 30))
    rows = []
    for label, spec, n_train, epochs in sets:
        ds = datasets.load_data(spec)
        train, test = datasets.train_test_split(ds, n_train)
        assert ds.image_shape is not None
        with seeded(seed):
            vae = VAE(
                VAEConfig(
                    dim=ds.dim,
                    latent=2,
                    loss="bce",
                    image_shape=ds.image_shape,
                    hidden=[512],
                    activation="silu",
                )
            )
        fit(vae, train.x, TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed),
            progress=report.training(f"VAE on {label}"))  # fmt: skip
        from pushforward.runs import codes, manifold

        fig = plots.scatter_2d(codes(vae, test.x), labels=test.labels, size=4.0,
                               title=f"{label}: posterior means of held-out images")  # fmt: skip
        report.figure(sec, fig, f"vae_latent_{label.lower()}", f"{label}: μ(x) by digit label")
        fig = plots.image_grid(manifold(vae, 15), ds.image_shape, ncols=15, scale=0.42,
                               title=f"{label}: decoded manifold g(Φ⁻¹(u), Φ⁻¹(v))")  # fmt: skip
        report.figure(sec, fig, f"vae_manifold_{label.lower()}", f"{label}: the decoded manifold")
        page = explorer_page(vae, test, title=f"{label}: explore the VAE's latent space")
        sec.pages.append((f"{label}: move the pointer over the codes to decode z live; "
                          "click twice to interpolate", page, 720))  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        elbo = float(vae.elbo(test.x, generator=gen)["elbo"].mean())
        # k = 250 importance samples: k = 1,000 on the 2,000 held-out MNIST digits took 21 s, a
        # tenth of the gallery, for an estimate 0.17 nat tighter (161.16 against 161.33 nats)
        ll = vae.log_likelihood(test.x, k=100 if quick else 250, generator=gen)
        bpd = -ll.mean / (ds.dim * math.log(2))
        fd = image_quality(lambda n, g, m=vae: m.sample(n, generator=g), test, ds, seed=seed)
        # the same weights, sampled from the mixture prior fitted to the training codes
        mixed = VAE.from_config({**vae.get_config(), "prior": "gmm"})
        mixed.load_state_dict(vae.state_dict(), strict=False)
        mixed.finish(train.x)
        fd_mix = image_quality(lambda n, g, m=mixed: m.sample(n, generator=g), test, ds, seed=seed)
        trained[f"vae_{label}"] = fd, fd_mix, epochs
        rows.append([label, f"{train.n:,} / {test.n:,}", str(epochs), f"{-elbo:.2f}",
                     f"{-ll.mean:.2f} ± {ll.mean_stderr:.2f}", f"{bpd:.4f}",
                     f"{fd['frechet_distance']:.1f} ({fd['frechet_distance_floor']:.1f})",
                     f"{fd_mix['frechet_distance']:.1f}",
                     f"{100 * fd['feature_accuracy']:.1f}"])  # fmt: skip
    header = ["data", "train / test", "epochs", "−ELBO", f"−log p(x), IWAE k={ll.k}", "bits/dim",
              "Fréchet distance, z ~ N(0, I) (real floor)", "Fréchet distance, mixture prior",
              "feature net accuracy %"]  # fmt: skip
    sec.tables.append((header, rows))
    return sec


GALLERY_GAN: dict[str, Any] = {"epochs": 3, "quick_epochs": 1, "rows": 8000}
"""The gallery's image GAN: the default image GAN (:data:`pushforward.gan.RECOMMENDED_IMAGES`,
conv 32,64) for a few epochs (6 s an epoch of 8,000 digits on 2 idle cores), far too short for
good digits; BENCHMARKS.md has its Fréchet distance after longer training."""


def _interpolation(model: Any, pairs: int, steps: int, seed: int) -> Tensor:
    """Return g(z_t) (pairs·steps, d) along great circles z_t = slerp(z_a, z_b, t) between pairs
    of latent draws (a Gaussian's draws keep their norm along a great circle, not a chord)."""
    gen = torch.Generator().manual_seed(seed)
    a = model.latent_measure.sample(pairs, generator=gen)  # (pairs, k)
    b = model.latent_measure.sample(pairs, generator=gen)
    t = torch.linspace(0, 1, steps)
    cos = torch.nn.functional.cosine_similarity(a, b).clamp(-1, 1)
    omega = torch.arccos(cos).unsqueeze(1)  # (pairs, 1)
    sin = torch.sin(omega).clamp_min(1e-6)
    wa = torch.sin((1 - t) * omega) / sin  # (pairs, steps)
    wb = torch.sin(t * omega) / sin
    z = wa.unsqueeze(2) * a.unsqueeze(1) + wb.unsqueeze(2) * b.unsqueeze(1)  # (pairs, steps, k)
    with torch.no_grad():
        return model.decode(z.reshape(pairs * steps, -1)).clamp(0, 1)


def _gan_digits_section(
    report: Report, quick: bool, seed: int, mnist: str | None, trained: dict[str, Any]
) -> Section:
    from pushforward.metrics import image_quality
    from pushforward.models.gan import RECOMMENDED_IMAGES, GANConfig
    from pushforward.train import TrainConfig, fit, seeded

    label, spec = ("MNIST", mnist) if mnist is not None else ("digits", "digits")
    ds = datasets.load_data(spec)
    n_train = GALLERY_GAN["rows"] if mnist is not None else 1500
    train, test = datasets.train_test_split(ds, n_train)
    assert ds.image_shape is not None
    epochs = GALLERY_GAN["quick_epochs" if quick else "epochs"]
    with seeded(seed):
        gan = GANConfig().build(train)
    settings = RECOMMENDED_IMAGES["train"]
    start = time.perf_counter()
    history = fit(gan, train.x, TrainConfig(**{**settings, "epochs": epochs, "seed": seed}),
                  progress=report.training("GAN on digits"))  # fmt: skip
    seconds = time.perf_counter() - start
    sec = Section(
        "The GAN on digits",
        "The same pushforward g#N(0, I) on images, fitted adversarially with the image defaults "
        "of `pushforward fit gan`: DCGAN's pair of conv networks at half its widths (g: k = 64 "
        "→ 7×7 maps → 14×14 → 28×28 through transposed convolutions of "
        f"{gan.net.hidden[1]} and {gan.net.hidden[0]} channels; the critic: convolutions back "
        "down to one logit), the non-saturating game with R1 at the data and a running average "
        f"of g's weights. Here for {epochs} epoch(s), {seconds:.0f} s on this machine; "
        "BENCHMARKS.md has the same setting after longer training. The interpolation walks great "
        "circles between pairs of latent draws. The table sets the GAN's Fréchet distance "
        "beside the VAE's of the section above, on the same held-out digits, in the feature "
        "space of the digit classifier (its held-out accuracy beside each); two halves of the "
        "real held-out digits give the floor.",
    )
    with torch.no_grad():
        images = gan.sample(64, generator=torch.Generator().manual_seed(seed))
    fig = plots.image_grid(images.clamp(0, 1), ds.image_shape, ncols=16, scale=0.42,
                           title=f"{label}: samples of the GAN")  # fmt: skip
    report.figure(sec, fig, f"gan_samples_{label.lower()}", f"{label}: GAN samples")
    fig = plots.image_grid(_interpolation(gan, 6, 12, seed), ds.image_shape, ncols=12,
                           scale=0.42, title=f"{label}: g along great circles in z")  # fmt: skip
    report.figure(sec, fig, f"gan_interpolation_{label.lower()}", f"{label}: latent interpolation")
    fig = plots.gan_curves(history, title=f"{label}: the GAN's losses and gradient norms")
    report.figure(sec, fig, f"gan_curves_{label.lower()}", f"{label}: training health")
    fd = image_quality(lambda n, g: gan.sample(n, generator=g), test, ds, seed=seed)
    rows = []
    if f"vae_{label}" in trained:
        vae_fd, vae_mix, vae_epochs = trained[f"vae_{label}"]
        for name, q in (("z ~ N(0, I)", vae_fd), ("mixture prior", vae_mix)):
            rows.append([f"VAE (k = 2, MLP), {name}", str(vae_epochs),
                         f"{q['frechet_distance']:.1f}", f"{q['frechet_distance_floor']:.1f}",
                         f"{100 * q['feature_accuracy']:.1f}"])  # fmt: skip
    rows.append([f"GAN (k = {gan.latent}, conv {gan.net.hidden})", str(epochs),
                 f"{fd['frechet_distance']:.1f}", f"{fd['frechet_distance_floor']:.1f}",
                 f"{100 * fd['feature_accuracy']:.1f}"])  # fmt: skip
    header = [f"{label}: {train.n:,} to train, {test.n:,} held out", "epochs",
              "Fréchet distance", "real floor", "feature net accuracy %"]  # fmt: skip
    sec.tables.append((header, rows))
    return sec


def _extent(ds: datasets.Dataset) -> tuple[float, float, float, float]:
    """The square (x_min, x_max, y_min, y_max) around 2-D data, with a margin of 0.5."""
    lo, hi = float(ds.x.min()) - 0.5, float(ds.x.max()) + 0.5
    return lo, hi, lo, hi


def _grid(ds: datasets.Dataset, side: int) -> tuple[Tensor, tuple[float, float, float, float]]:
    """Return a side × side grid of points (side², 2) over :func:`_extent` and that extent."""
    extent = _extent(ds)
    t = torch.linspace(extent[0], extent[1], side)
    return torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(-1, 2), extent


def _mixture_frames(name: str, ds: datasets.Dataset, snaps: SampleSnapshots) -> list[Figure]:
    limits = _extent(ds)
    return [
        plots.scatter_2d(
            ds.x[:2000], others=[(y, "g#μ")], size=1.5, ax_limits=limits, title=f"{name}: {ep}"
        )
        for ep, y in ((f"epoch {e}", y) for e, y in snaps.frames)
    ]


# --- the five mixture sections: each mixture (ring8, grid25) is one independent chain of parts ---
#
# The sections' training runs are small networks that barely use a second thread (BENCHMARKS.md),
# so the gallery runs ring8's chain here and grid25's in a second process, both on one thread, and
# joins the two into the sections. Both chains always run on one thread, so the page is the same
# with or without the second process.

MIXTURES = ("ring8", "grid25")
MIXTURE_SECTIONS = ("mixtures", "gan", "flow", "fm", "fidelity")


def _gan_epochs(quick: bool) -> int:
    from pushforward.models.gan import RECOMMENDED

    # two thirds of the benchmark's epochs: on seed 0, 1/3 left grid25 at 49% high quality, 1/2 at
    # 90%, 2/3 at 96% (all 320: 98.6%), for 18, 27, 37 and 58 s a data set (BENCHMARKS.md)
    epochs = RECOMMENDED["train"]["epochs"]
    return max(1, epochs // 50 if quick else epochs * 2 // 3)


def _flow_epochs(quick: bool) -> int:
    from pushforward.models.flow import RECOMMENDED

    return max(1, RECOMMENDED["train"]["epochs"] // (18 if quick else 3))


def _fm_epochs(quick: bool) -> int:
    from pushforward.models.fm import RECOMMENDED

    return max(1, RECOMMENDED["train"]["epochs"] // (40 if quick else 10))


FM_TIMES = (0.5, 0.8, 1.0)


def _mixtures_section() -> Section:
    return Section(
        "Gaussian mixtures learned over training",
        "A VAE with a 2-D latent space and a Gaussian likelihood of learned variance (from "
        "σ = 0.1, with the KL weight warmed up over 5 epochs), trained on the ring and grid "
        "mixtures. The animations show 1,000 samples of g#N(0, I) (orange) "
        "over the data (blue), frame by frame as training proceeds; the heat map is the "
        "model's density p(x), estimated by importance weighting on a grid. The VAE finds every "
        "mode but blurs between them: its decoder is smooth, and the Gaussian likelihood "
        "accounts for what it cannot place. Below, the same runs live "
        "(<code>pushforward explore</code>): the pointer's z is decoded in the page and g(z) "
        "drawn over the data, and the slider scrubs the samples through training.",
    )


def _vae_mixture(report: Report, sec: Section, name: str, quick: bool, seed: int) -> tuple:
    """Train the 2-D VAE on mixture ``name``; its animation, explorer page and heat map."""
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import TrainConfig, fit, seeded

    epochs = 20 if quick else 60
    points = 2_500 if quick else 10_000  # the GAN, flow and fm parts train on these too
    ds = datasets.load_data(name, n=points, generator=torch.Generator().manual_seed(seed))
    with seeded(seed):
        vae = VAE(
            VAEConfig(
                dim=2,
                latent=2,
                loss="gaussian",
                sigma=0.1,
                learn_sigma=True,
                kl_schedule="linear",
                kl_warmup=5,
                hidden=[256, 256],
                activation="silu",
            )
        )
    snaps = SampleSnapshots(vae, 1000, every=_every(epochs, quick), seed=seed)
    fit(
        vae,
        ds.x,
        TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, seed=seed),
        progress=report.training(f"VAE on {name}", snaps),
    )
    frames = _mixture_frames(name, ds, snaps)
    shots = ([e for e, _ in snaps.frames], torch.stack([y for _, y in snaps.frames]))
    page = explorer_page(vae, ds, snapshots=shots, title=f"{name}: explore the VAE")
    sec.pages.append((f"{name}: decode z live over the data; scrub g#μ over training",
                      page, 1100))  # fmt: skip
    report.animation(sec, plots.gif_bytes(frames), f"train_{name}", f"{name}: training")
    side = 40 if quick else 100
    grid, limits = _grid(ds, side)
    gen = torch.Generator().manual_seed(seed)
    logp = vae.log_likelihood(grid, k=64, generator=gen).log_px
    fig = plots.density_heatmap(logp.reshape(side, side), limits, title=f"{name}: model density")
    report.figure(sec, fig, f"density_{name}", f"{name}: the VAE's density (IWAE estimate)")
    return ds, vae


def _gan_section(quick: bool) -> Section:
    from pushforward.models.gan import RECOMMENDED, TRUNCATION

    return Section(
        "The GAN: the same g, fitted adversarially",
        "The second way to fit the pushforward g#N(0, I): a critic D learns to tell data from "
        "samples while g learns to fool it. The benchmarked setting plays the non-saturating "
        "game on standardised data with an R1 penalty on the critic's slope at the data (which "
        "keeps every mode), lets the learning rate decay to 0 on a cosine (which sharpens them), "
        "and samples g#μ, rejecting the "
        f"{100 * TRUNCATION:g}% of latent draws where g stretches most (Jacobian truncation: "
        "there g passes between modes). Unlike the VAE it has no likelihood to "
        "estimate; it is judged by its samples. The table compares both models on 2,500 "
        "samples (PacGAN protocol: a sample is high quality within 3σ of its nearest mode; "
        "reverse KL of the mode histogram against uniform), and by unbiased MMD² and W₁ against "
        "fresh draws of the true mixture, beside the floor that a second set of real draws scores "
        "(on 500 points per set in quick mode, 2,000 otherwise)."
        + f" Here it trains {_gan_epochs(quick)} of the benchmark's "
        f"{RECOMMENDED['train']['epochs']} epochs.",
    )


def _gan_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, vae: Any,
                 quick: bool, seed: int) -> tuple[Any, list[list[str]]]:  # fmt: skip
    """Train the recommended GAN on ``ds``; its animation, curves and the table's rows."""
    from pushforward.metrics import point_quality
    from pushforward.models.gan import GAN, RECOMMENDED, GANConfig
    from pushforward.train import TrainConfig, fit, seeded

    epochs = _gan_epochs(quick)
    with seeded(seed):
        gan = GAN(GANConfig(dim=2, **RECOMMENDED["model"]))
    snaps = SampleSnapshots(gan, 1000, every=_every(epochs, quick), seed=seed)
    cfg = TrainConfig(**{**RECOMMENDED["train"], "epochs": epochs, "seed": seed})
    history = fit(gan, ds.x, cfg, progress=report.training(f"GAN on {name}", snaps))
    frames = _mixture_frames(name, ds, snaps)
    report.animation(sec, plots.gif_bytes(frames), f"gan_train_{name}", f"{name}: training")
    fig = plots.gan_curves(history, title=f"{name}: the GAN's losses and gradient norms")
    report.figure(sec, fig, f"gan_curves_{name}", f"{name}: training health")
    rows = []
    points = 500 if quick else 2000
    for label, model in (("VAE", vae), ("GAN", gan)):
        q = point_quality(
            lambda n, g, m=model: m.sample(n, generator=g), ds, seed=seed, points=points
        )
        rows.append([name, label, f"{q['modes_captured']} / {q['n_modes']}",
                     f"{100 * q['high_quality']:.1f}", f"{q['reverse_kl']:.3f}",
                     f"{q['mmd2']:.5f}", f"{q['wasserstein1']:.4f}"])  # fmt: skip
    rows.append([name, "real data (floor)", "", "", "", f"{q['mmd2_floor']:.5f}",
                 f"{q['wasserstein1_floor']:.4f}"])  # fmt: skip
    return gan, rows


GAN_HEADER = ["data", "model", "modes", "high quality %", "reverse KL", "MMD²", "W₁"]


def _fidelity_row(name: str, label: str, model: Any, ds: datasets.Dataset, *, quick: bool,
                  seed: int) -> list[str]:  # fmt: skip
    """One row of the fidelity table: the PacGAN mode scores of 2,500 samples (no rejection
    beyond the model's own sampling settings) and KL(p ‖ q) to the known truth."""
    from pushforward.metrics import IWAE_UPPER, point_quality, truth_fidelity

    q = point_quality(lambda n, g: model.sample(n, generator=g), ds, seed=seed, points=500)
    gen = torch.Generator().manual_seed(seed)
    # 2,000 draws of p (a standard error of about 0.005 nats for the flows): an exact likelihood
    # through an ODE costs d backward passes per evaluation of the field
    f = truth_fidelity(model, ds.distribution, generator=gen, iwae_k=64 if quick else 1000,
                       n=2000)  # fmt: skip
    if "kl_to_truth" not in f:
        kl = "— (no density)"
    else:
        bound = "≤ " if f["kl_to_truth_kind"] == IWAE_UPPER else ""
        kl = f"{bound}{f['kl_to_truth']:.3f} ± {f['kl_to_truth_stderr']:.3f}"
    return [name, label, f"{q['modes_captured']} / {q['n_modes']}",
            f"{100 * q['high_quality']:.1f} ({100 * q['high_quality_ceiling']:.1f})",
            f"{q['mode_width']:.3f}", f"{q['reverse_kl']:.4f}", kl,
            f"{f['knn_kl']:.3f} ({f['knn_kl_floor']:.3f})"]  # fmt: skip


class _Truth:
    """A known mixture scored as a model (exact draws, exact density): each column's ceiling."""

    generative, likelihood_kind = True, EXACT_LIKELIHOOD

    def __init__(self, mixture: datasets.GaussianMixture):
        self.mixture = mixture

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return self.mixture.sample(n, generator=generator)

    def log_likelihood_rows(self, x: Tensor, **_: Any) -> Tensor:
        return self.mixture.log_prob(x.double())


def _flow_section(quick: bool) -> Section:
    from pushforward.models.flow import RECOMMENDED

    return Section(
        "Pushforwards with exact densities",
        "A normalizing flow is a pushforward g#N(0, I) with g invertible, so its density is the "
        "lecture's change of variables in d dimensions: log q(x) = log μ(g⁻¹(x)) + "
        "log |det ∂g⁻¹/∂x|. Trained by maximum likelihood (here the benchmarked neural spline "
        f"flow: {RECOMMENDED['model']['layers']} rational-quadratic coupling layers of "
        f"{RECOMMENDED['model']['bins']} bins, for {_flow_epochs(quick)} of its "
        f"{RECOMMENDED['train']['epochs']} epochs), its density can be set beside the truth's: "
        "the heat maps show log q of the "
        "flow next to log p of the mixture it learned. Last, a flow on images: pixels are "
        "dequantised (uniform noise spreads each 8-bit value over its bin) and sent through a "
        "logit, both Jacobians counted, so that held-out digits get an exact likelihood in "
        "bits per dimension of the discrete data (8 would be a uniform guess).",
    )


def _flow_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, quick: bool,
                  seed: int) -> Any:  # fmt: skip
    """Train the recommended spline flow on ``ds``; its animation, exact density and samples."""
    from pushforward.models.flow import RECOMMENDED, Flow, FlowConfig
    from pushforward.train import TrainConfig, fit, seeded

    epochs = _flow_epochs(quick)
    with seeded(seed):
        flow = Flow(FlowConfig(dim=2, **RECOMMENDED["model"]))
    snaps = SampleSnapshots(flow, 1000, every=_every(epochs, quick), seed=seed)
    fit(flow, ds.x, TrainConfig(**{**RECOMMENDED["train"], "epochs": epochs, "seed": seed}),
        progress=report.training(f"flow on {name}", snaps))  # fmt: skip
    frames = _mixture_frames(name, ds, snaps)
    report.animation(sec, plots.gif_bytes(frames), f"flow_train_{name}", f"{name}: training")
    side = 60 if quick else 200
    grid, extent = _grid(ds, side)
    with torch.no_grad():
        log_q = flow.log_prob(grid).reshape(side, side)
    log_p = ds.distribution.log_prob(grid.double()).reshape(side, side)
    fig = plots.density_heatmap(log_p, extent, title=f"{name}: the truth, log p")
    report.figure(sec, fig, f"truth_density_{name}", f"{name}: the true density")
    fig = plots.density_heatmap(log_q, extent, title=f"{name}: the flow, log q (exact)")
    report.figure(sec, fig, f"flow_density_{name}", f"{name}: the flow's exact density")
    with torch.no_grad():
        y = flow.sample(2000, generator=torch.Generator().manual_seed(seed))
    fig = plots.scatter_2d(ds.x[:2000], others=[(y, "flow samples")], size=1.5,
                           ax_limits=extent, title=f"{name}: samples of the flow")  # fmt: skip
    report.figure(sec, fig, f"flow_samples_{name}", f"{name}: flow samples over the data")
    return flow


def _flow_digits(report: Report, sec: Section, quick: bool, seed: int) -> None:
    """A masked autoregressive flow on dequantised 8×8 digits: samples and exact bits/dim."""
    from pushforward.models.flow import Flow, FlowConfig
    from pushforward.train import TrainConfig, fit, seeded

    train, test = datasets.train_test_split(datasets.load_digits(), 1500)
    digit_epochs = 10 if quick else 40
    with seeded(seed):
        flow = Flow(FlowConfig(dim=64, transform="maf", layers=5, hidden=[256], image_shape=(8, 8)))
    fit(flow, train.x, TrainConfig(epochs=digit_epochs, batch_size=128, lr=1e-3, seed=seed),
        progress=report.training("MAF on 8×8 digits"))  # fmt: skip
    r = flow.evaluate(test.x, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = flow.sample(64, generator=torch.Generator().manual_seed(seed))
    title = f"digits: samples of a MAF ({r['bits_per_dim']:.2f} bits/dim)"
    fig = plots.image_grid(images.clamp(0, 1), (8, 8), ncols=16, scale=0.42, title=title)
    report.figure(sec, fig, "flow_samples_digits", "digits: samples of the flow")
    sec.tables.append((
        ["data", "flow", "train / test", "epochs", "held-out −log p(x), nats", "bits/dim"],
        [["digits (8×8)", "MAF, 5 layers of 256", f"{train.n:,} / {test.n:,}", str(digit_epochs),
          f"{r['nll']:.1f} ± {r['log_likelihood_stderr']:.1f}", f"{r['bits_per_dim']:.3f}"]],
    ))  # fmt: skip


def _fm_section(quick: bool) -> Section:
    from pushforward.models.fm import RECOMMENDED

    return Section(
        "Flow matching: the pushforward as a motion",
        "Flow matching moves μ continuously: a network v(t, x) defines the ODE dx/dt = v(t, x), "
        "and g is its flow map from t = 0 (μ = N(0, I)) to t = 1. It is trained by regression "
        "(draw x₀ ~ μ, a data point x₁ and t, and fit v(t, t·x₁ + (1 − t)·x₀) to x₁ − x₀), "
        "with no ODE solved in training; sampling solves the ODE (adaptive Dormand–Prince, "
        "its number of field evaluations in each caption). The density stays exact through the "
        "instantaneous change of variables, log q(x) = log μ(x₀) − ∫₀¹ tr ∂v/∂x dt. Here "
        f"{_fm_epochs(quick)} of the benchmarked {RECOMMENDED['train']['epochs']} epochs: the "
        "animation carries 1,000 "
        "draws of μ to the data, the lines are their paths, and the heat maps are the exact "
        "density of the moving particles at t = " + ", ".join(f"{t:g}" for t in FM_TIMES) + ".",
    )


def _fm_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, quick: bool,
                seed: int) -> Any:  # fmt: skip
    """Train flow matching on ``ds``; its motion, paths and exact marginal densities."""
    from pushforward.models.fm import RECOMMENDED, FlowMatching, FlowMatchingConfig
    from pushforward.train import TrainConfig, fit, seeded

    settings = RECOMMENDED["train"]
    with seeded(seed):
        model = FlowMatching(FlowMatchingConfig(dim=2, **RECOMMENDED["model"]))
    batch = settings["batch_size"] if settings["batch_size"] < ds.n else 0  # 0: full batch
    cfg = TrainConfig(**{**settings, "epochs": _fm_epochs(quick), "seed": seed,
                         "batch_size": batch})  # fmt: skip
    fit(model, ds.x, cfg, progress=report.training(f"flow matching on {name}"))
    extent = _extent(ds)
    steps = torch.linspace(0, 1, 9 if quick else 2 * FRAMES + 1)
    path = model.motion(1000, steps, generator=torch.Generator().manual_seed(seed))
    nfe = model.sampling_cost()["nfe"]
    frames = [plots.scatter_2d(ds.x[:2000], others=[(p, "particles")], size=1.5,
                               ax_limits=extent, title=f"{name}: t = {float(t):.2f}")
              for t, p in zip(steps, path, strict=True)]  # fmt: skip
    caption = f"{name}: μ carried to the data ({nfe} field evaluations)"
    report.animation(sec, plots.gif_bytes(frames), f"fm_motion_{name}", caption)
    fig = plots.trajectories(path[:, :300], data=ds.x[:2000], ax_limits=extent,
                             title=f"{name}: paths of the ODE")  # fmt: skip
    report.figure(sec, fig, f"fm_paths_{name}", f"{name}: 300 paths from μ to the data")
    side = 32 if quick else 90
    grid, extent = _grid(ds, side)
    saved = model.sampling_settings()
    model.set_sampling(rtol=1e-3, atol=1e-3)  # pictures need no more; the table uses 1e-5
    for t in FM_TIMES:
        with torch.no_grad():
            lp = model.marginal_log_prob(grid, t).reshape(side, side)
        fig = plots.density_heatmap(lp, extent, title=f"{name}: log p_t at t = {t:g}")
        report.figure(sec, fig, f"fm_density_{name}_{t:g}", f"{name}: exact log p_t, t = {t:g}")
    model.set_sampling(**saved)
    return model


def _fidelity_section() -> Section:
    return Section(
        "Fidelity to the truth",
        "Every model of this page measured against the mixture it learned, on the same draws: "
        "modes, the share of high-quality samples (with the truth's own share in brackets, the "
        "ceiling), the modes' width (1 is right), reverse KL, and KL(p ‖ q) = E_p[log p − "
        "log q] in nats ± its standard error on fresh draws of p — exact for the flow and flow "
        "matching, an upper bound through the IWAE estimate for the VAE, none for the GAN, "
        "which has no density; the last column is a k-nearest-neighbour estimate from samples "
        "alone, which every model gets (the truth's own value in brackets shows its error). "
        "The models here are trained for a fraction of their benchmarked epochs; BENCHMARKS.md "
        "has the same table over 10 seeds with full training.",
    )


FIDELITY_HEADER = ["data", "model", "modes", "high quality % (truth)", "width", "reverse KL",
                   "KL(p ‖ q) nats", "k-NN KL (truth)"]  # fmt: skip


@dataclass
class _Chain:
    """What one mixture's chain of parts left for the five mixture sections: each section's
    figures (saved under the report's folder), explorer pages and table rows, and how long each
    part took."""

    name: str
    parts: dict[str, Section] = field(default_factory=dict)
    rows: dict[str, list[list[str]]] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)


def _mixture_chain(report: Report, name: str, quick: bool, seed: int,
                   say: Callable[[str], None] | None = None) -> _Chain:  # fmt: skip
    """Run the five mixture parts on mixture ``name`` in order, on one thread."""
    chain = _Chain(name, {k: Section("", "") for k in MIXTURE_SECTIONS})

    def part(key: str, label: str, work: Callable[[Section], Any]) -> Any:
        if say is not None:
            say(f"    {name}: {label}")
        start = time.perf_counter()
        out = work(chain.parts[key])
        chain.timings.append((f"{label} ({name})", time.perf_counter() - start))
        return out

    with _threads(1):
        ds, vae = part("mixtures", "Gaussian mixtures",
                       lambda s: _vae_mixture(report, s, name, quick, seed))  # fmt: skip
        gan, chain.rows["gan"] = part(
            "gan", "GAN on the mixtures",
            lambda s: _gan_mixture(report, s, name, ds, vae, quick, seed),
        )  # fmt: skip
        flow = part("flow", "flows", lambda s: _flow_mixture(report, s, name, ds, quick, seed))
        fm = part("fm", "flow matching", lambda s: _fm_mixture(report, s, name, ds, quick, seed))
        models = [("VAE", vae), ("GAN", gan), ("flow", flow), ("flow matching", fm),
                  ("truth", _Truth(ds.distribution))]  # fmt: skip
        chain.rows["fidelity"] = part(
            "fidelity", "fidelity to the truth",
            lambda s: [_fidelity_row(name, label, m, ds, quick=quick, seed=seed)
                       for label, m in models],
        )  # fmt: skip
    return chain


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore the count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _die_with(parent: int) -> None:
    """End this process (SIGKILL: it has nothing to clean up) when ``parent`` ends, even by
    SIGKILL: Linux's PR_SET_PDEATHSIG; elsewhere the child runs its chain to the end and then
    finds the pipe closed."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent ended before the line above took effect
        os._exit(1)


def _chain_in_child(conn: Any, folder: str, name: str, quick: bool, seed: int, parent: int,
                    logging_setup: tuple[int, str | None]) -> None:  # fmt: skip
    """Entry point of the second process: run one mixture's chain and send it back.

    The parent started this process with SIGINT blocked, and it stays blocked here (training
    installs a Ctrl-C handler, which a blocked signal never reaches): a Ctrl-C is the parent's
    to handle, and the parent ends this process."""
    import traceback

    from pushforward.core import PushforwardError

    _die_with(parent)
    level, fmt = logging_setup
    if fmt is not None:  # the parent's command line prints its log records; so does this one
        logging.basicConfig(level=level, format=fmt)
    logging.getLogger("pushforward").setLevel(level)
    try:
        chain = _mixture_chain(Report(Path(folder)), name, quick, seed)
    except BaseException as e:  # every failure goes back to the parent
        kind = type(e).__name__ if isinstance(e, PushforwardError) else None
        conn.send(("error", (kind, str(e)), traceback.format_exc()))
    else:
        conn.send(("ok", chain, ""))
    finally:
        conn.close()


class _Beside:
    """One mixture's chain in a second, spawned process (one thread); :meth:`result` waits for it.

    The child is started with SIGINT blocked, so a Ctrl-C in the terminal reaches only this
    process, which ends the child in :meth:`close`. A child that dies without answering (killed,
    out of memory) is reported as an error instead of waiting forever, and the child ends when
    this process does.
    """

    def __init__(self, folder: Path, name: str, quick: bool, seed: int):
        import multiprocessing
        import os

        from pushforward.train import start_with_sigint_blocked

        self.name, self.folder = name, folder
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=False)
        root = logging.getLogger()
        handler = root.handlers[0] if root.handlers else None
        fmt = handler.formatter._fmt if handler is not None and handler.formatter else None
        setup = (logging.getLogger("pushforward").getEffectiveLevel(), fmt)
        args = (child, str(folder), name, quick, seed, os.getpid(), setup)
        self.process = ctx.Process(target=_chain_in_child, args=args,
                                   name=f"pushforward-demo-{name}")  # fmt: skip
        start_with_sigint_blocked(self.process)  # POSIX; elsewhere Ctrl-C reaches both
        child.close()

    def result(self) -> _Chain:
        while not self.conn.poll(0.5):
            if not self.process.is_alive() and not self.conn.poll(0):
                self._died()
        try:
            status, value, trace = self.conn.recv()
        except EOFError:  # the child's end closed without a message
            self._died()
        if status != "ok":
            kind, message = value
            where = f"the gallery's part on {self.name} (in its second process)"
            if kind is not None:  # an error of the library's own: the same kind, here
                from pushforward.core import errors

                cls = getattr(errors, kind, None)
                if not (isinstance(cls, type) and issubclass(cls, errors.PushforwardError)):
                    cls = errors.PushforwardError
                raise cls(f"{where}: {message}")
            log.error("the gallery's second process failed:\n%s", trace)
            raise RuntimeError(f"{where} failed: {message}")
        return value

    def _died(self) -> NoReturn:
        self.process.join(5)
        raise RuntimeError(
            f"the gallery's second process ({self.name}) ended without an answer, "
            f"exit code {self.process.exitcode}"
        )

    def close(self) -> None:
        """End the child if it still runs (SIGTERM, then SIGKILL after 5 s) and remove what its
        unfinished atomic writes left."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            for tmp in (self.folder / "figures").glob(f".*{self.name}*.tmp"):
                tmp.unlink(missing_ok=True)
        self.process.join()
        self.conn.close()


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    bars: Callable[[str], TrainingProgress] | None = None,
    workers: int = 1,
) -> Path:
    """Regenerate the lecture's figures from built-in data into ``out``; return the report path.

    ``quick`` uses fewer samples, points and epochs (BENCHMARKS.md gives its time). MNIST is shown
    when its files are found (see :func:`pushforward.datasets.find_mnist_folder`). With
    ``workers`` = 2, the sections on the Gaussian mixtures run grid25's part in a second process
    (spawned: a script that calls this needs the ``if __name__ == "__main__":`` guard) while this
    one runs ring8's; the page is the same either way, since both parts run on one thread.
    """
    if type(workers) is not int or workers not in (1, 2):
        raise ConfigError(f"workers = {workers!r} is not allowed; use 1 or 2")
    folder = Path(out)
    report = Report(folder, bars=bars)
    say = progress or (lambda msg: log.info(msg))
    n = 20_000 if quick else 100_000
    mnist_dir = datasets.find_mnist_folder()
    mnist = f"mnist:{mnist_dir}" if mnist_dir is not None else None
    trained: dict[str, Any] = {}  # the digits' VAE, compared with their GAN
    begin = time.perf_counter()

    steps: list[tuple[str, Callable[[], Section]]] = [
        ("univariate pushforwards", lambda: _univariate_section(report, n, seed)),
        ("discrete pushforward", lambda: _dice_section(report)),
        ("datasets", lambda: _data_section(report, n // 10, seed, mnist)),
        ("PCA and autoencoders", lambda: _encoders_section(report, quick, seed)),
        ("VAE on digits", lambda: _vae_digits_section(report, quick, seed, mnist, trained)),
        ("GAN on digits", lambda: _gan_digits_section(report, quick, seed, mnist, trained)),
    ]
    total = len(steps) + 2
    for i, (name, step) in enumerate(steps, 1):
        say(f"[{i}/{total}] {name}")
        start = time.perf_counter()
        report.sections.append(step())
        report.timings.append((name, time.perf_counter() - start))

    # the five sections on the mixtures: ring8's chain here, grid25's beside it or after it
    first, second = MIXTURES
    where = "in a second process" if workers == 2 else "after it"
    say(f"[{total - 1}/{total}] the Gaussian mixtures: {first} here, {second} {where}")
    digits = Section("", "")
    beside = _Beside(folder, second, quick, seed) if workers == 2 else None
    try:
        chains = [_mixture_chain(report, first, quick, seed, say)]
        report.timings += chains[0].timings
        say(f"[{total}/{total}] flows on digits")
        start = time.perf_counter()
        with _threads(1):  # beside the second process; on one thread either way
            _flow_digits(report, digits, quick, seed)
        report.timings.append(("MAF on digits", time.perf_counter() - start))
        start = time.perf_counter()
        if beside is not None:
            chains.append(beside.result())
            report.timings.append((f"waiting for {second}", time.perf_counter() - start))
            report.beside = chains[1].timings
        else:
            chains.append(_mixture_chain(report, second, quick, seed, say))
            report.timings += chains[1].timings
    finally:
        if beside is not None:
            beside.close()
    sections = {"mixtures": _mixtures_section(), "gan": _gan_section(quick),
                "flow": _flow_section(quick), "fm": _fm_section(quick),
                "fidelity": _fidelity_section()}  # fmt: skip
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
        report.sections.append(sec)
    report.elapsed = time.perf_counter() - begin
    log.info("the gallery's parts took: %s (beside: %s)", report.timings, report.beside)
    return report.write()
