"""The gallery's section on fidelity to the truth: every model of the mixture sections, and the
true mixture itself, scored against the mixture it learned."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pushforward.core import EXACT_LIKELIHOOD
from pushforward.data import datasets
from pushforward.gallery.page import Section

__all__ = [
    "FIDELITY_HEADER",
    "IWAE_K",
    "QUICK_IWAE_K",
    "QUICK_TRUTH_DRAWS",
    "TRUTH_DRAWS",
    "Truth",
    "fidelity_row",
    "fidelity_section",
]

TRUTH_DRAWS, QUICK_TRUTH_DRAWS = 2000, 500
"""Fresh draws of the truth each row's KL(p ‖ q) averages over, in the full gallery and in
``--quick``: about 0.005 nats of standard error for the flows at 2,000, whose exact likelihood
through an ODE costs d backward passes per evaluation of the field."""

IWAE_K, QUICK_IWAE_K = 250, 64
"""Importance samples of the VAEs' likelihood bound in the full gallery, and in ``--quick``.
Against ``benchmarks/fidelity.py``'s 1,000, on the gallery's own VAEs (seed 0, this page's
settings), the bound moved by 0.0003 nats for the VampPrior (ring8 and grid25) and by 0.005 /
0.05 nats for N(0, I) (grid25 / ring8; standard errors 0.03), in a quarter of the time: 5–6 CPU s
instead of 19–26 for the VampPrior, whose 200 components are scored at every one of the bound's
2 million draws, and 2 s instead of 7–10 for N(0, I) (BENCHMARKS.md, "The VampPrior VAE in the
gallery")."""


def fidelity_section(quick: bool = False) -> Section:
    """Return the section on fidelity to the truth, its text only; the chains add its rows."""
    return Section(
        "Fidelity to the truth",
        "Every model of this page measured against the mixture it learned, on the same draws: "
        "modes, the share of high-quality samples (with the truth's own share in brackets, the "
        "ceiling), the modes' width (1 is right), reverse KL, and KL(p ‖ q) = E_p[log p − "
        "log q] in nats ± its standard error on fresh draws of p — exact for the flow and flow "
        "matching, an upper bound through the IWAE estimate for the VAEs (with "
        f"{QUICK_IWAE_K if quick else IWAE_K} importance samples), none for the GAN, "
        "which has no density; the last column is a k-nearest-neighbour estimate from samples "
        "alone, which every model gets (the truth's own value in brackets shows its error). "
        "Most models here are trained for a fraction of their benchmarked epochs (the VampPrior "
        "VAE for all of them); BENCHMARKS.md has the same table over 10 seeds with full "
        "training.",
    )


FIDELITY_HEADER = ["data", "model", "modes", "high quality % (truth)", "width", "reverse KL",
                   "KL(p ‖ q) nats", "k-NN KL (truth)"]  # fmt: skip
"""The columns of the section's table (:func:`fidelity_row` makes its rows)."""


def fidelity_row(name: str, label: str, model: Any, ds: datasets.Dataset, *, quick: bool,
                  seed: int) -> list[str]:  # fmt: skip
    """One row of the fidelity table: the PacGAN mode scores of 2,500 samples (no rejection
    beyond the model's own sampling settings) and KL(p ‖ q) to the known truth."""
    from pushforward.metrics import IWAE_UPPER, point_quality, truth_fidelity

    q = point_quality(lambda n, g: model.sample(n, generator=g), ds, seed=seed, points=500,
                      distances=False)  # the mode scores only  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    k, n = (QUICK_IWAE_K, QUICK_TRUTH_DRAWS) if quick else (IWAE_K, TRUTH_DRAWS)
    f = truth_fidelity(model, ds.distribution, generator=gen, iwae_k=k, n=n)
    if "kl_to_truth" not in f:
        kl = "— (no density)"
    else:
        bound = "≤ " if f["kl_to_truth_kind"] == IWAE_UPPER else ""
        kl = f"{bound}{f['kl_to_truth']:.3f} ± {f['kl_to_truth_stderr']:.3f}"
    return [name, label, f"{q['modes_captured']} / {q['n_modes']}",
            f"{100 * q['high_quality']:.1f} ({100 * q['high_quality_ceiling']:.1f})",
            f"{q['mode_width']:.3f}", f"{q['reverse_kl']:.4f}", kl,
            f"{f['knn_kl']:.3f} ({f['knn_kl_floor']:.3f})"]  # fmt: skip


class Truth:
    """A known mixture scored as a model (exact draws, exact density): each column's ceiling."""

    generative, likelihood_kind = True, EXACT_LIKELIHOOD

    def __init__(self, mixture: datasets.GaussianMixture):
        self.mixture = mixture

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return n exact draws (n, 2) of the mixture."""
        return self.mixture.sample(n, generator=generator)

    def log_likelihood_rows(self, x: Tensor, **_: Any) -> Tensor:
        """Return the exact log-density (n,) of each row of x (n, 2), in float64."""
        return self.mixture.log_prob(x.double())
