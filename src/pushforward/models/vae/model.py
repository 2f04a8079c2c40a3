"""The variational autoencoder, exactly as the lecture states it, and its maximum-likelihood view.

Training (one step, for a batch xᵢ):

1. encode (μᵢ, ξᵢ) = f(xᵢ), with ξ the log-variance;
2. sample zᵢ = μᵢ + exp(ξᵢ/2)·ε, ε ~ N(0, I) (reparameterised: gradients flow through μ and ξ);
3. decode x̂ᵢ = g(zᵢ);
4. step on R(xᵢ, x̂ᵢ) + λ·KL(N(μᵢ, e^ξᵢ) ‖ N(0, I)), the KL in closed form.

Reconstruction terms (see :mod:`pushforward.losses`), each a negative log-likelihood −log p(x | z):

============  =================================================  ==============================
``loss``      what the training loss uses                         the likelihood p(x | z) it is
============  =================================================  ==============================
``bce``       Σ_j BCE(x_j, sigmoid(g(z)_j)), from logits          Bernoulli(sigmoid(g(z))), exactly
``l2``        ‖x − g(z)‖²                                         N(g(z), ½I), up to (d/2)·log π
``l1``        Σ_j |x_j − g(z)_j|                                  Laplace(g(z), 1), up to d·log 2
``gaussian``  −log N(x; g(z), σ²I), σ fixed (``sigma``) or learned  N(g(z), σ²I), exactly
``laplace``   −log Laplace(x; g(z), b), b fixed or learned         Laplace(g(z), b), exactly
============  =================================================  ==============================

So with λ = 1 the training loss is the negative ELBO in nats, up to the stated constant for ``l2``
and ``l1``; :meth:`VAE.elbo` and :meth:`VAE.log_likelihood` always report the exact quantities,
with every normalising constant. Every term is summed over data dimensions and averaged over
examples; nothing is ever averaged over dimensions.

The generative model is the pushforward g#p(z) (:meth:`VAE.as_pushforward`) with p(z) the prior:

* ``prior="normal"``: p(z) = N(0, I), the lecture's;
* ``prior="gmm"``: after training, p(z) is a Gaussian mixture of ``prior_components``
  full-covariance components fitted by EM (scikit-learn) to the posterior means μ(x) of the
  training data: the ex-post density estimate of Ghosh et al. (2020), the idea behind Pythae's
  ``GaussianMixtureSampler``. The aggregate posterior the decoder was trained on is not N(0, I),
  and draws from N(0, I) land where few codes were: on MNIST the mixture takes the Fréchet
  distance of the samples from 321 to 105 (BENCHMARKS.md, "Images"). Training is unchanged: the KL
  term still regularises q(z | x) towards N(0, I); sampling, the ELBO (whose KL to the mixture is
  then estimated from the same draw) and the IWAE likelihood use the fitted prior. The prior is
  fitted by :meth:`VAE.finish`, which :func:`~pushforward.train.fit` calls after the last epoch;
  before that it is N(0, I) written as a mixture.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pushforward.core import (
    LOWER_BOUND,
    ConfigError,
    ModelSpec,
    ResultKey,
    check_rows,
    lookup,
    setting,
)
from pushforward.data import GaussianMixture
from pushforward.measures import BaseMeasure, MixtureMeasure, Pushforward, StandardNormal
from pushforward.models.vae.fused import fusable, vae_loss_and_gradients
from pushforward.nets import (
    ACTIVATIONS,
    CONV_WIDTHS,
    MAX_LATENT,
    MAX_WIDTH,
    NetConfig,
    NetSettings,
    as_net_config,
    build_decoder,
    build_encoder,
    check_sizes,
    decoder_program,
    gaussian_kl_terms,
    negative_log_likelihood,
    output_mean,
    reconstruction,
)
from pushforward.nets.losses import output_activation
from pushforward.train import Optimization, Trainable

__all__ = ["KL_SCHEDULES", "LIKELIHOODS", "PRIORS", "VAE", "LogLikelihood", "VAEConfig"]

log = logging.getLogger(__name__)

DIAGNOSTIC_ROWS = 512
"""Rows the per-epoch diagnostics are estimated on: at 2,048 they cost 4% of an MNIST epoch of
8,000 digits (BENCHMARKS.md, "Training speed"); 512 give Var_x μ_j(x) to about 6% (relative
standard error √(2/511)), ample beside the active-unit threshold 0.01."""
PRIORS = ("normal", "gmm")
"""The priors p(z) a VAE can sample from (see the module docstring)."""
MAX_PRIOR_COMPONENTS = 1000
PRIOR_FIT_ROWS = 20_000
"""The most training rows whose codes the ``gmm`` prior is fitted to (a seeded subset beyond):
EM on 8,000 codes of 16 dimensions with 50 components takes about 10 CPU seconds."""
LOGVAR_RANGE = (-30.0, 20.0)  # e^-30 to e^20: wide, but keeps exp(ξ) and 1/exp(ξ) finite


@dataclass(frozen=True)
class Likelihood:
    """A reconstruction term: the R it trains on, and the exact likelihood it stands for."""

    family: str  # 'l2' (Gaussian), 'l1' (Laplace) or 'bce' (Bernoulli)
    trains_on_nll: bool  # train on the exact NLL (with σ) rather than the bare R
    fixed_log_scale: float | None  # log σ (or log b) of the likelihood that R stands for


LIKELIHOODS: dict[str, Likelihood] = {
    "bce": Likelihood("bce", False, None),
    "l2": Likelihood("l2", False, 0.5 * math.log(0.5)),
    "l1": Likelihood("l1", False, 0.0),
    "gaussian": Likelihood("l2", True, None),
    "laplace": Likelihood("l1", True, None),
}


def _constant(kl_weight: float, epoch: float, period: float) -> float:
    return kl_weight


def _linear(kl_weight: float, epoch: float, period: float) -> float:
    return kl_weight * min(1.0, epoch / period) if period > 0 else kl_weight


def _cyclical(kl_weight: float, epoch: float, period: float) -> float:
    # Fu et al. (2019): within each cycle of `period` epochs, ramp up over the first half
    tau = (epoch % period) / period
    return kl_weight * min(1.0, 2.0 * tau)


KL_SCHEDULES = {"constant": _constant, "linear": _linear, "cyclical": _cyclical}


@dataclass(frozen=True)
class LogLikelihood:
    """Importance-weighted log-likelihood estimates per example, in nats."""

    log_px: Tensor  # (n,) estimates of log p(x)
    stderr: Tensor  # (n,) Monte Carlo standard errors of those estimates (delta method)
    k: int

    @property
    def mean(self) -> float:
        """Mean estimate over examples."""
        return float(self.log_px.mean())

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of :attr:`mean`."""
        return float(self.stderr.pow(2).sum().sqrt() / self.log_px.numel())


# what the hand-written gradients compute: a subclass that overrides any of these trains on autograd
_LOSS_PARTS = ("loss", "posterior", "reparameterize", "current_kl_weight", "_nll")


def _plain_loss(cls: type) -> bool:
    return all(getattr(cls, name) is getattr(VAE, name) for name in _LOSS_PARTS)


class VAE(Trainable):
    """Variational autoencoder: encoder f (B, d) → (μ, ξ) each (B, k), decoder g (B, k) → (B, d).

    Args:
        dim: data dimension d.
        latent: latent dimension k ≥ 1.
        loss: reconstruction term by name (see the module docstring): ``bce``, ``l2``, ``l1``,
            ``gaussian``, ``laplace``.
        sigma: σ (or b) of ``gaussian`` / ``laplace``; the initial value when learned (default 1).
        learn_sigma: learn one log σ per data dimension (``gaussian`` / ``laplace`` only).
        kl_weight: λ, the weight of the KL term (1 for the ELBO).
        kl_schedule: ``constant``, ``linear`` (warm up from 0 over ``kl_warmup`` epochs) or
            ``cyclical`` (repeat that warm-up every ``kl_warmup`` epochs, ramping over its first
            half).
        free_bits: per latent dimension, the batch-mean KL below which it is not penalised
            (Kingma et al., 2016); 0 turns it off. Reported KL terms are always the true ones.
        prior: p(z) for sampling and the likelihood: ``normal`` (N(0, I)) or ``gmm`` (a
            Gaussian mixture fitted to the codes after training; see the module docstring).
        prior_components: the number of the ``gmm`` prior's components.
        net: encoder :class:`~pushforward.nets.NetConfig`; the decoder mirrors it.
        image_shape: (h, w) of image data (for convolutional nets and figures).
    """

    evaluate_keys: ClassVar[dict[str, ResultKey]] = {
        "elbo": ResultKey("ELBO", ".3f", "mean evidence lower bound (one draw)", unit="nats"),
        "neg_elbo": ResultKey("−ELBO", ".3f", "minus the mean ELBO", unit="nats"),
        "log_px_given_z": ResultKey(
            "E_q log p(x | z)", ".3f", "the ELBO's reconstruction term", unit="nats"
        ),
        "kl": ResultKey("KL(q ‖ p)", ".3f", "the ELBO's KL term", unit="nats"),
        "iwae_k": ResultKey("importance samples k", ",", "k of the IWAE estimate"),
        "active_units": ResultKey(
            "active units", "", "VAE: latent units with Var_x μ_j(x) > 0.01 (Burda et al.)"
        ),
        "kl_per_dim": ResultKey("KL per latent unit", "", "VAE: KL of each latent unit", "nats"),
    }
    """The keys of :meth:`evaluate` that only this model gives."""

    has_encoder = True
    code_label = "posterior means μ(x)"
    optimization = Optimization.MANUAL_GRADIENTS  # an MLP VAE's hand-written gradients (fused)

    def __init__(
        self,
        dim: int,
        latent: int = 2,
        *,
        loss: str = "bce",
        sigma: float | None = None,
        learn_sigma: bool = False,
        kl_weight: float = 1.0,
        kl_schedule: str = "constant",
        kl_warmup: float = 10.0,
        free_bits: float = 0.0,
        prior: str = "normal",
        prior_components: int = 50,
        net: NetConfig | dict[str, Any] | None = None,
        image_shape: tuple[int, int] | list[int] | None = None,
    ):
        super().__init__()
        check_sizes(dim, latent)
        if prior not in PRIORS:
            raise ConfigError(f"unknown prior {prior!r}; known: {', '.join(PRIORS)}")
        if (
            isinstance(prior_components, bool)
            or not isinstance(prior_components, int)
            or not (1 <= prior_components <= MAX_PRIOR_COMPONENTS)
        ):
            raise ConfigError(
                f"prior_components = {prior_components!r} is not allowed; use an integer in "
                f"[1, {MAX_PRIOR_COMPONENTS}]"
            )
        self.likelihood = lookup(LIKELIHOODS, loss, what="reconstruction loss")
        lookup(KL_SCHEDULES, kl_schedule, what="KL schedule")
        if (sigma is not None or learn_sigma) and not self.likelihood.trains_on_nll:
            raise ConfigError(
                f"sigma and learn_sigma apply to the 'gaussian' and 'laplace' losses, not {loss!r}"
            )
        if sigma is not None and not (sigma > 0 and math.isfinite(sigma)):
            raise ConfigError(f"sigma = {sigma!r} is not allowed; use a finite number > 0")
        if not (kl_weight >= 0 and math.isfinite(kl_weight)):
            raise ConfigError(f"kl_weight = {kl_weight!r} is not allowed; use a number ≥ 0")
        if kl_schedule != "constant" and not kl_warmup > 0:
            raise ConfigError(
                f"kl_warmup = {kl_warmup!r} is not allowed; use a number of epochs > 0"
            )
        if free_bits < 0:
            raise ConfigError(f"free_bits = {free_bits!r} is not allowed; use a number ≥ 0")
        self.net = as_net_config(net)
        self.dim, self.latent, self.loss_name = dim, latent, loss
        self.sigma, self.learn_sigma = sigma, learn_sigma
        self.kl_weight, self.kl_schedule, self.kl_warmup = kl_weight, kl_schedule, kl_warmup
        self.free_bits = free_bits
        self.prior, self.prior_components = prior, prior_components
        if prior == "gmm":
            # N(0, I) as a mixture until finish() fits it: equal weights, means 0, covariances I
            c = prior_components
            self.register_buffer("prior_weights", torch.full((c,), 1.0 / c, dtype=torch.float64))
            self.register_buffer("prior_means", torch.zeros(c, latent, dtype=torch.float64))
            self.register_buffer(
                "prior_covariances",
                torch.eye(latent, dtype=torch.float64).expand(c, latent, latent).clone(),
            )
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        # one encoder with a fused (μ, ξ) head: (B, d) → (B, 2k)
        self.encoder = build_encoder(self.net, dim, 2 * latent, self.image_shape)
        self.decoder = build_decoder(self.net, latent, dim, self.image_shape)
        if self.likelihood.trains_on_nll:
            init = math.log(sigma if sigma is not None else 1.0)
            if learn_sigma:
                self.log_scale = nn.Parameter(torch.full((dim,), init))
            else:
                self.register_buffer("log_scale", torch.tensor(init))
        else:
            fixed = self.likelihood.fixed_log_scale or 0.0
            self.register_buffer("log_scale", torch.tensor(fixed))

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "latent": self.latent,
            "loss": self.loss_name,
            "sigma": self.sigma,
            "learn_sigma": self.learn_sigma,
            "kl_weight": self.kl_weight,
            "kl_schedule": self.kl_schedule,
            "kl_warmup": self.kl_warmup,
            "free_bits": self.free_bits,
            "prior": self.prior,
            "prior_components": self.prior_components,
            "net": self.net.to_dict(),
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    # --- the lecture's maps ------------------------------------------------------------------

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (μ, ξ), each (n, k): the mean and log-variance of q(z | x) = N(μ, e^ξ)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: Tensor) -> Tensor:
        """Return the posterior means μ(x), shape (n, k): the codes of x (n, d)."""
        return self.encoder(x).chunk(2, dim=1)[0]

    @property
    def latent_measure(self) -> BaseMeasure:
        """The prior p(z) of z: N(0, I_k), or the fitted Gaussian mixture (``prior="gmm"``)."""
        if self.prior == "normal":
            return StandardNormal(self.latent)
        mixture = GaussianMixture(
            self.prior_weights.cpu(), self.prior_means.cpu(), self.prior_covariances.cpu()
        )
        return MixtureMeasure(mixture)

    @torch.no_grad()
    def finish(self, x: Tensor) -> None:
        """Fit the ``gmm`` prior to the posterior means μ(x) (n, k) of the training data x (n, d)
        by EM (scikit-learn's ``GaussianMixture``, full covariances, k-means start with a fixed
        seed, so the same weights and data give the same prior); at most
        :data:`PRIOR_FIT_ROWS` rows, a seeded subset. Nothing to do for ``prior="normal"``."""
        if self.prior != "gmm":
            return
        from sklearn.mixture import GaussianMixture as EM  # imported when first needed

        if x.shape[0] > PRIOR_FIT_ROWS:
            pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
            x = x[pick[:PRIOR_FIT_ROWS].to(x.device)]
        codes = torch.cat([self.encode(xb).double().cpu() for xb in x.split(4096)])
        c = min(self.prior_components, codes.shape[0])
        em = EM(c, covariance_type="full", reg_covar=1e-6, max_iter=200, random_state=0)
        with warnings.catch_warnings(record=True) as caught:  # the library logs, never warns
            warnings.simplefilter("always")
            em.fit(codes.numpy())
        for w in caught:
            log.warning("fitting the mixture prior: %s", w.message)
        w = torch.as_tensor(em.weights_)
        means = torch.as_tensor(em.means_)
        covs = torch.as_tensor(em.covariances_)
        if c < self.prior_components:  # fewer rows than components: repeat the fitted ones
            extra = torch.arange(self.prior_components - c) % c
            w = torch.cat([w, w[extra]])
            means, covs = torch.cat([means, means[extra]]), torch.cat([covs, covs[extra]])
        self.prior_weights.copy_(w / w.sum())
        self.prior_means.copy_(means)
        self.prior_covariances.copy_(covs)

    def reparameterize(
        self, mu: Tensor, logvar: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return z = μ + exp(ξ/2)·ε with ε ~ N(0, I) drawn from ``generator``, shape of μ."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: Tensor) -> Tensor:
        """Return the mean of p(x | z) (sigmoid of the logits for ``bce``), shape (n, d)."""
        return output_mean(self.likelihood.family, self.decoder(z))

    def decoder_layers(self) -> list[tuple] | None:
        """Return :meth:`decode` as a portable program (None for a conv decoder)."""
        head = ("activation", output_activation(self.likelihood.family))
        return decoder_program(self.decoder, head)

    def forward(self, x: Tensor) -> Tensor:
        """Return the reconstruction g(μ(x)) at the posterior mean, shape (n, d)."""
        return self.decode(self.encode(x))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Return g(μ(x)), shape (n, d)."""
        with torch.no_grad():
            return self(x)

    def as_pushforward(self) -> Pushforward:
        """Return the generative model g#p(z) as a Pushforward (p(z) the prior)."""
        return Pushforward(self.decode, self.latent_measure)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return n draws of g#p(z): the decoder means at z ~ p(z), shape (n, d)."""
        return self.as_pushforward().sample(n, generator=generator)

    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 8) -> Tensor:
        """Return the decoded line between the posterior means of x0 and x1 (d,): (steps, d)."""
        with torch.no_grad():
            mu, _ = self.posterior(torch.stack([x0.reshape(-1), x1.reshape(-1)]))
            t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)
            return self.decode((1 - t) * mu[0] + t * mu[1])

    # --- training ----------------------------------------------------------------------------

    def current_kl_weight(self, epoch: float | None) -> float:
        """Return λ at ``epoch`` elapsed epochs under the schedule (the final λ when None)."""
        if epoch is None:
            return self.kl_weight
        return KL_SCHEDULES[self.kl_schedule](self.kl_weight, epoch, self.kl_warmup)

    def _nll(self, x: Tensor, out: Tensor) -> Tensor:
        return negative_log_likelihood(self.likelihood.family, x, out, self.log_scale)

    fused_step: bool = True
    """Train an MLP VAE on gradients written out by hand (:mod:`pushforward.fused`: the same
    loss and gradients to rounding, no autograd graph); False: through autograd, op by op."""

    def manual_gradients(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]] | None:
        # a subclass that changes the loss or a piece of it trains through autograd
        if not (self.fused_step and _plain_loss(type(self)) and fusable(self, x)):
            return None
        # the draw reparameterize makes in the autograd loss: the run's random stream is the same
        eps = torch.randn(
            (x.shape[0], self.latent), generator=generator, device=x.device, dtype=x.dtype
        )
        lam = self.current_kl_weight(epoch)
        return vae_loss_and_gradients(self, x, eps, lam)

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> dict[str, Tensor]:
        mu, logvar = self.posterior(x)
        # under bfloat16 autocast the products come back in bfloat16; the noise, the KL and the
        # likelihood are computed in float32 all the same
        mu, logvar = mu.float(), logvar.float()
        z = self.reparameterize(mu, logvar, generator=generator)
        out = self.decoder(z).float()
        if self.likelihood.trains_on_nll:
            rec = self._nll(x, out).mean()
        else:
            rec = reconstruction(self.likelihood.family, x, out).mean()
        kl_dims = gaussian_kl_terms(mu, logvar).mean(0)  # (k,) batch-mean KL per dimension
        kl = kl_dims.sum()
        kl_penalty = kl_dims.clamp_min(self.free_bits).sum() if self.free_bits > 0 else kl
        lam = self.current_kl_weight(epoch)
        return {"loss": rec + lam * kl_penalty, "reconstruction": rec, "kl": kl}

    # --- the MLE view ------------------------------------------------------------------------

    @torch.no_grad()
    def elbo(
        self, x: Tensor, *, generator: torch.Generator | None = None, batch_size: int = 1000
    ) -> dict[str, Tensor]:
        """Return the per-example ELBO in nats and its two terms, each (n,), for x (n, d).

        ELBO(x) = E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)), the expectation estimated with
        one reparameterised draw, every normalising constant included; the KL is in closed form
        for p(z) = N(0, I), and estimated from the same draw, log q(z | x) − log p(z), for the
        ``gmm`` prior.
        """
        check_rows(x, "x", dim=self.dim)
        prior = self.latent_measure if self.prior != "normal" else None
        parts: dict[str, list[Tensor]] = {"elbo": [], "log_px_given_z": [], "kl": []}
        for xb in x.split(batch_size):
            mu, logvar = self.posterior(xb)
            z = self.reparameterize(mu, logvar, generator=generator)
            log_px_z = -self._nll(xb, self.decoder(z))
            if prior is None:
                kl = gaussian_kl_terms(mu, logvar).sum(1)
            else:
                log_qz = -0.5 * (
                    ((z - mu).pow(2) / logvar.exp() + logvar).sum(1)
                    + self.latent * math.log(2 * math.pi)
                )
                kl = log_qz - prior.log_prob(z)
            parts["elbo"].append(log_px_z - kl)
            parts["log_px_given_z"].append(log_px_z)
            parts["kl"].append(kl)
        return {k: torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        k: int = 1000,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 100,
        max_elements: int = 2**24,
    ) -> LogLikelihood:
        """Return the importance-weighted estimate log (1/k) Σ_j p(x, z_j)/q(z_j | x), z_j ~ q.

        Per example, with its Monte Carlo standard error. Memory stays bounded: rows go
        ``batch_size`` at a time and samples in chunks of at most ``max_elements`` decoder
        outputs; weights are combined with running log-sum-exp sums. The estimate never
        exceeds log p(x) in expectation and rises to it as k grows (Burda et al., 2016).
        """
        check_rows(x, "x", dim=self.dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k = {k!r} is not allowed; use an integer ≥ 1")
        prior = self.latent_measure
        out_lp, out_se = [], []
        for xb in x.split(batch_size):
            b = xb.shape[0]
            mu, logvar = self.posterior(xb)
            std = torch.exp(0.5 * logvar)
            chunk = max(1, min(k, max_elements // (b * self.dim)))
            m = torch.full((b,), -math.inf, dtype=torch.float64, device=xb.device)
            s1 = torch.zeros(b, dtype=torch.float64, device=xb.device)
            s2 = torch.zeros_like(s1)
            done = 0
            while done < k:
                s = min(chunk, k - done)
                eps = torch.randn((s, b, self.latent), generator=generator, device=xb.device)
                z = mu + std * eps  # (s, b, k)
                out = self.decoder(z.reshape(s * b, self.latent))
                log_px_z = -self._nll(xb.repeat(s, 1), out).reshape(s, b)
                log_pz = prior.log_prob(z.reshape(s * b, self.latent)).reshape(s, b)
                log_qz = -0.5 * (eps.pow(2).sum(-1) + self.latent * math.log(2 * math.pi))
                log_qz = log_qz - 0.5 * logvar.sum(-1)
                lw = (log_px_z + log_pz - log_qz).double()  # (s, b)
                new_m = torch.maximum(m, lw.max(0).values)
                s1 = s1 * torch.exp(m - new_m) + torch.exp(lw - new_m).sum(0)
                s2 = s2 * torch.exp(2 * (m - new_m)) + torch.exp(2 * (lw - new_m)).sum(0)
                m = new_m
                done += s
            mean_w = s1 / k
            var_w = (s2 / k - mean_w.pow(2)).clamp_min(0)
            out_lp.append(m + torch.log(mean_w))
            out_se.append(torch.sqrt(var_w / k) / mean_w)
        return LogLikelihood(torch.cat(out_lp), torch.cat(out_se), k)

    likelihood_kind = LOWER_BOUND  # type: ignore[assignment]  # IWAE bounds log p(x) below

    @torch.no_grad()
    def log_likelihood_rows(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> Tensor:
        """Return the IWAE estimate of log p(x) (n,) with ``iwae_k`` importance samples: a lower
        bound in expectation (see :meth:`log_likelihood`)."""
        return self.log_likelihood(x, k=iwae_k, generator=generator).log_px

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> dict[str, Any]:
        """Return the squared reconstruction error at μ(x), the ELBO and its terms, the IWAE
        log-likelihood with ``iwae_k`` importance samples ± its Monte Carlo standard error, bits
        per dimension, and the latent diagnostics, for x (n, d); nats per example."""
        out = super().evaluate(x, generator=generator)
        e = self.elbo(x, generator=generator)
        ll = self.log_likelihood(x, k=iwae_k, generator=generator)
        out.update(
            elbo=float(e["elbo"].mean()),
            neg_elbo=-float(e["elbo"].mean()),
            log_px_given_z=float(e["log_px_given_z"].mean()),
            kl=float(e["kl"].mean()),
            iwae_k=iwae_k,
            log_likelihood=ll.mean,
            log_likelihood_stderr=ll.mean_stderr,
            nll=-ll.mean,
            bits_per_dim=-ll.mean / (self.dim * math.log(2)),
        )
        diagnostics = self.diagnostics(x, generator=generator)
        out.update({k: v for k, v in diagnostics.items() if k != "posterior_collapse"})
        return out

    # --- diagnostics -------------------------------------------------------------------------

    @torch.no_grad()
    def diagnostics(self, x: Tensor, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Return KL per latent dimension, the number of active units, and a collapse flag.

        A unit j is active when Cov_x(E[z_j | x]) = Var_x(μ_j(x)) > 0.01 (Burda et al., 2016).
        Estimated on at most ``DIAGNOSTIC_ROWS`` rows (a random subset drawn with ``generator``),
        so that the per-epoch diagnostics cost little beside training.
        """
        if x.shape[0] > DIAGNOSTIC_ROWS:
            pick = torch.randperm(x.shape[0], generator=generator, device=x.device)
            x = x[pick[:DIAGNOSTIC_ROWS]]
        mus, kls = [], []
        for xb in x.split(2048):
            mu, logvar = self.posterior(xb)
            mus.append(mu)
            kls.append(gaussian_kl_terms(mu, logvar).sum(0))
        mu = torch.cat(mus)
        kl_dims = torch.stack(kls).sum(0) / x.shape[0]
        active = int((mu.var(0) > 0.01).sum()) if mu.shape[0] > 1 else 0
        if active == 0 and not getattr(self, "_collapse_warned", False):
            self._collapse_warned = True  # once per model: collapse often passes in early epochs
            log.warning(
                "posterior collapse: no latent unit depends on the input (all Var_x μ_j(x) ≤ 0.01)"
            )
        return {
            "active_units": active,
            "kl_per_dim": [round(float(v), 5) for v in kl_dims],
            "posterior_collapse": active == 0,
        }


def _in_unit_interval(x: Tensor) -> bool:
    return bool(x.min() >= 0) and bool(x.max() <= 1)


@dataclass
class VAEConfig(NetSettings):
    """Settings of ``pushforward fit vae``; the defaults are the benchmarked ones (BENCHMARKS.md,
    "VAE quality")."""

    mlp_widths = (512,)

    latent: int = setting(2, "latent dimension k", minimum=1, maximum=MAX_LATENT)
    loss: str | None = setting(
        None, "reconstruction term: bce, l2, l1, gaussian, laplace (default: bce for data in "
        "[0, 1], else gaussian with learned σ)", choices=LIKELIHOODS, what="reconstruction loss",
    )  # fmt: skip
    hidden: list[int] | None = setting(
        None, "hidden widths, e.g. 512,256 (default 512; conv: channel counts, default "
        + ",".join(map(str, CONV_WIDTHS)) + ")", minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    activation: str = setting(
        "silu", "relu, elu, gelu, silu, tanh, ...", choices=ACTIVATIONS, what="activation"
    )
    sigma: float | None = setting(None, "σ (or b) of the gaussian/laplace likelihood", above=0)
    learn_sigma: bool = setting(False, "learn σ per data dimension (gaussian/laplace)")
    kl_weight: float = setting(1.0, "λ, the weight of the KL term", minimum=0)
    kl_schedule: str = setting(
        "constant", "constant, linear (warm-up) or cyclical", choices=KL_SCHEDULES,
        what="KL schedule",
    )  # fmt: skip
    kl_warmup: float = setting(10.0, "KL warm-up (or cycle) length in epochs", above=0)
    free_bits: float = setting(0.0, "free bits per latent dimension, in nats", minimum=0)
    prior: str | None = setting(
        None, "prior p(z) to sample from: normal (N(0, I)) or gmm (a Gaussian mixture fitted to "
        "the codes after training; default: gmm on images, normal on points)", choices=PRIORS,
        what="prior",
    )  # fmt: skip
    prior_components: int = setting(
        50, "components of the gmm prior", minimum=1, maximum=MAX_PRIOR_COMPONENTS
    )

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """Runs stored before the prior existed sampled from N(0, I)."""
        return {"prior": "normal"}

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the network (:meth:`NetSettings.kind_defaults`) and the prior: the fitted
        mixture on images, where it is measured to give much better samples (BENCHMARKS.md,
        "Images"), N(0, I) on points."""
        return {**super().kind_defaults(kind), "prior": "gmm" if kind == "images" else "normal"}

    def check(self) -> None:
        if (self.sigma is not None or self.learn_sigma) and self.loss is not None:
            if not LIKELIHOODS[self.loss].trains_on_nll:
                raise ConfigError(
                    f"sigma and learn_sigma apply to the 'gaussian' and 'laplace' losses, "
                    f"not {self.loss!r}"
                )

    def build(self, ds: Any) -> VAE:
        cfg = self.resolve(ds.kind)
        # default likelihood: Bernoulli for data in [0, 1] (images), else a Gaussian with learned σ
        loss = cfg.loss or ("bce" if _in_unit_interval(ds.x) else "gaussian")
        learn_sigma = cfg.learn_sigma or (
            cfg.loss is None and loss == "gaussian" and cfg.sigma is None
        )
        sigma = cfg.sigma
        if sigma is None and learn_sigma:
            # start σ at a tenth of the data's spread: started at 1, a Gaussian of learned σ
            # explains low-dimensional data (ring8, grid25) before the latent does, and the
            # posterior collapses onto the prior
            sigma = 0.1 * max(float(ds.x.std(0).mean()), 1e-3)
        return VAE(
            ds.dim, cfg.latent, loss=loss, sigma=sigma, learn_sigma=learn_sigma,
            kl_weight=cfg.kl_weight, kl_schedule=cfg.kl_schedule, kl_warmup=cfg.kl_warmup,
            free_bits=cfg.free_bits, prior=cfg.prior or "normal",
            prior_components=min(cfg.prior_components, ds.x.shape[0]), net=cfg.net_config(),
            image_shape=ds.image_shape,
        )  # fmt: skip


SPEC = ModelSpec(
    VAE,
    VAEConfig,
    "the variational autoencoder: encoder (μ, ξ), decoder g, loss R + λ·KL",
    train_defaults={"lr": 3e-3, "batch_size": 64, "precision": "auto"},
)
