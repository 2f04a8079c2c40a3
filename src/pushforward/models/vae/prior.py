"""The VAE's priors by name, and the ``gmm`` sampler: a Gaussian mixture fitted to the codes after
training.

* ``prior="normal"``: p(z) = N(0, I), the lecture's;
* ``prior="gmm"``: the model is trained with and scored under N(0, I), and after training it
  *samples* from a Gaussian mixture of ``prior_components`` full-covariance components fitted by
  EM (scikit-learn) to the posterior means μ(x) of the training data: the ex-post density
  estimate of Ghosh et al. (2020), Pythae's ``GaussianMixtureSampler``. The aggregate posterior
  the decoder was trained on is not N(0, I), and draws from N(0, I) land where few codes were: on
  MNIST the mixture takes the Fréchet distance of the samples from 321 to 105 (BENCHMARKS.md,
  "Images"). Training is unchanged, and so are the ELBO and the IWAE likelihood (under N(0, I));
  the same under the mixture are reported beside, labelled as the sampler's. The mixture is
  fitted by :meth:`VAE.finish`, which :func:`~pushforward.train.fit` calls after the last epoch;
  before that it is N(0, I) written as a mixture;
* ``prior="vamp"``, ``"flow"``: priors trained with the nets
  (:mod:`~pushforward.models.vae.trained_prior`).
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor

__all__ = [
    "MAX_PRIOR_COMPONENTS",
    "PRIORS",
    "PRIOR_BUFFERS",
    "PRIOR_FIT_ROWS",
    "fit_mixture_prior",
    "fit_rows",
    "standard_mixture",
]

log = logging.getLogger(__name__)

PRIORS = ("normal", "gmm", "vamp", "flow")
"""The priors p(z) of a VAE by name (see :mod:`pushforward.models.vae.model`)."""
MAX_PRIOR_COMPONENTS = 1000
PRIOR_FIT_ROWS = 20_000
"""The most training rows whose codes the ``gmm`` prior is fitted to (a seeded subset beyond):
EM on 8,000 codes of 16 dimensions with 50 components takes about 10 CPU seconds."""
PRIOR_BUFFERS = ("prior_weights", "prior_means", "prior_covariances")
"""The names a VAE keeps the mixture's weights (c,), means (c, k) and covariances (c, k, k) by."""


def standard_mixture(components: int, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return N(0, I_k) written as a mixture of c = ``components`` equal components: weights
    (c,), means (c, k) of zeros, covariances (c, k, k) of identities, float64."""
    c, f64 = components, torch.float64
    eye = torch.eye(k, dtype=f64).expand(c, k, k).clone()
    return torch.full((c,), 1.0 / c, dtype=f64), torch.zeros(c, k, dtype=f64), eye


def fit_rows(x: Tensor) -> Tensor:
    """Return the rows of x (n, d) the prior is fitted to: all, or :data:`PRIOR_FIT_ROWS` of them
    drawn with a fixed seed."""
    if x.shape[0] <= PRIOR_FIT_ROWS:
        return x
    pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    return x[pick[:PRIOR_FIT_ROWS].to(x.device)]


def fit_mixture_prior(codes: Tensor, components: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return the weights (c,), means (c, k) and covariances (c, k, k), float64, of a Gaussian
    mixture of c = ``components`` fitted by EM to codes (n, k) (scikit-learn's
    ``GaussianMixture``, full covariances, k-means start with a fixed seed, so the same codes give
    the same mixture). With fewer codes than components, the fitted ones are repeated."""
    from sklearn.mixture import GaussianMixture as EM  # imported when first needed

    c = min(components, codes.shape[0])
    em = EM(c, covariance_type="full", reg_covar=1e-6, max_iter=200, random_state=0)
    with warnings.catch_warnings(record=True) as caught:  # the library logs, never warns
        warnings.simplefilter("always")
        em.fit(codes.double().cpu().numpy())
    for w in caught:
        log.warning("fitting the mixture prior: %s", w.message)
    w = torch.as_tensor(em.weights_)
    means = torch.as_tensor(em.means_)
    covs = torch.as_tensor(em.covariances_)
    if c < components:
        extra = torch.arange(components - c) % c
        w = torch.cat([w, w[extra]])
        means, covs = torch.cat([means, means[extra]]), torch.cat([covs, covs[extra]])
    return w / w.sum(), means, covs
