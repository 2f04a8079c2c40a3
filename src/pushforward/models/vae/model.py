"""The variational autoencoder, exactly as the lecture states it, and its maximum-likelihood view.

Training (one step, for a batch xᵢ):

1. encode (μᵢ, ξᵢ) = f(xᵢ), with ξ the log-variance;
2. sample zᵢ = μᵢ + exp(ξᵢ/2)·ε, ε ~ N(0, I) (reparameterised: gradients flow through μ and ξ);
3. decode x̂ᵢ = g(zᵢ);
4. step on R(xᵢ, x̂ᵢ) + λ·KL(N(μᵢ, e^ξᵢ) ‖ N(0, I)), the KL in closed form.

The reconstruction term R is a negative log-likelihood −log p(x | z), exactly or up to a stated
constant (:mod:`~pushforward.models.vae.likelihoods`): with λ = 1 the training loss is the
negative ELBO in nats; :meth:`VAE.elbo` and :meth:`VAE.log_likelihood` always report the exact
quantities, with every normalising constant. Every term is summed over data dimensions and averaged
over examples; nothing is ever averaged over dimensions.

The model is scored under the prior it was trained with (the MLE view): :meth:`VAE.elbo`,
:meth:`VAE.log_likelihood` and :meth:`VAE.evaluate` bound log p(x) = log ∫ p(x | z) p(z) dz with
p(z) = :attr:`VAE.training_prior`. It samples from :attr:`VAE.latent_measure`, the pushforward
g#p(z) (:meth:`VAE.as_pushforward`), by the ``prior`` setting:

* ``prior="normal"``: trained with, scored under and sampled from N(0, I), the lecture's;
* ``prior="gmm"``: trained with and scored under N(0, I), sampled from a Gaussian mixture fitted
  to the codes after training (:mod:`~pushforward.models.vae.prior`): an ex-post *sampler*
  (Pythae's ``GaussianMixtureSampler``), not the prior of the likelihood. :meth:`VAE.evaluate`
  reports the likelihood under the sampler beside, in keys ending ``_sampler``;
* ``prior="vamp"`` or ``"flow"``: a prior trained jointly with the nets
  (:mod:`~pushforward.models.vae.trained_prior`), so trained with, scored under and sampled from
  that prior; step 4's KL is then estimated from the draw zᵢ, log q(zᵢ | xᵢ) − log p(zᵢ).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pushforward.core import LOWER_BOUND, ModelSpec, ResultKey, check_rows
from pushforward.data import GaussianMixture
from pushforward.measures import (
    BaseMeasure,
    MixtureMeasure,
    Pushforward,
    StandardNormal,
    draw,
    likelihood_summary,
)
from pushforward.models.vae.config import RECOMMENDED_POINTS, VAEConfig
from pushforward.models.vae.fused import fusable, vae_loss_and_gradients
from pushforward.models.vae.iwae import LogLikelihood, iwae_log_likelihood, iwae_log_likelihoods
from pushforward.models.vae.likelihoods import KL_SCHEDULES, LIKELIHOODS
from pushforward.models.vae.posterior import (
    LOGVAR_RANGE,
    posterior_diagnostics,
    posterior_log_prob,
    standardise,
)
from pushforward.models.vae.prior import (
    PRIOR_BUFFERS,
    fit_mixture_prior,
    fit_rows,
    standard_mixture,
)
from pushforward.models.vae.trained_prior import TRAINED_PRIORS, TrainedPriorMeasure
from pushforward.nets import (
    NetConfig,
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
from pushforward.train import Optimization, Trainable, outside_graph

__all__ = ["VAE", "VAEConfig"]

log = logging.getLogger(__name__)

# what the hand-written gradients compute: a subclass that overrides any of these trains on autograd
_LOSS_PARTS = "loss posterior reparameterize current_kl_weight _nll _sampled_kl training_prior"


def _plain_loss(cls: type) -> bool:
    return all(getattr(cls, name) is getattr(VAE, name) for name in _LOSS_PARTS.split())


class VAE(Trainable):
    """Variational autoencoder: encoder f (B, d) → (μ, ξ) each (B, k), decoder g (B, k) → (B, d).

    Args:
        config: its :class:`VAEConfig` (every setting is declared and checked there), kept as
            ``self.config``; the settings it leaves open take the lecture's values
            (:meth:`VAEConfig.filled`: ``bce``, N(0, I), an MLP), and :meth:`VAEConfig.build`
            fills them from data instead.
    """

    evaluate_keys: ClassVar[dict[str, ResultKey]] = {
        "elbo": ResultKey("ELBO", ".3f", "mean evidence lower bound (one draw)", unit="nats"),
        "neg_elbo": ResultKey("−ELBO", ".3f", "minus the mean ELBO", unit="nats"),
        "log_px_given_z": ResultKey(
            "E_q log p(x | z)", ".3f", "the ELBO's reconstruction term", unit="nats"
        ),
        "kl": ResultKey("KL(q ‖ p)", ".3f", "the ELBO's KL term", unit="nats"),
        "elbo_sampler": ResultKey(
            "ELBO (sampler)", ".3f", "VAE: the ELBO with p(z) the ex-post sampler (gmm)", "nats"
        ),
        "neg_elbo_sampler": ResultKey(
            "−ELBO (sampler)", ".3f", "VAE: minus the ELBO under the ex-post sampler", "nats"
        ),
        "kl_sampler": ResultKey(
            "KL(q ‖ sampler)", ".3f", "VAE: KL to the ex-post sampler (one draw)", "nats"
        ),
        "log_likelihood_sampler": ResultKey(
            "log p(x) (sampler)",
            ".3f",
            "VAE: IWAE log-likelihood under the ex-post sampler",
            unit="nats",
            stderr="log_likelihood_sampler_stderr",
        ),
        "log_likelihood_sampler_stderr": ResultKey(
            "", ".3f", "standard error of log_likelihood_sampler", "nats"
        ),
        "iwae_k": ResultKey("importance samples k", ",", "k of the IWAE estimate"),
        "iwae_stderr": ResultKey("IWAE error", ".3f", "VAE: Monte Carlo error of the IWAE", "nats"),
        "active_units": ResultKey(
            "active units", "", "VAE: latent units with Var_x μ_j(x) > 0.01 (Burda et al.)"
        ),
        "kl_per_dim": ResultKey("KL per latent unit", "", "VAE: KL of each latent unit", "nats"),
    }
    """The keys of :meth:`evaluate` that only this model gives."""

    has_encoder = True
    code_label = "posterior means μ(x)"
    optimization = Optimization.MANUAL_GRADIENTS  # an MLP VAE's hand-written gradients (fused)

    config_class = VAEConfig
    stacks = True  # loss(x, noise=ε): several seeds train as one stacked model
    stack_free_settings = ("sigma",)  # from the data; it only starts log σ

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config = config.filled()
        check_sizes(config.dim, config.latent)
        self.likelihood = LIKELIHOODS[config.loss]
        self.net = NetConfig.from_dict(config.net_config())
        k, image_shape = config.latent, config.image_shape
        if config.prior == "gmm":  # N(0, I) as a mixture until finish() fits it
            mixture = standard_mixture(config.prior_components, k)
            for name, tensor in zip(PRIOR_BUFFERS, mixture, strict=True):
                self.register_buffer(name, tensor)
        if self.prior_is_trained:
            self.prior_net = TRAINED_PRIORS[config.prior](config.prior_components, config.dim, k)
        # one encoder with a fused (μ, ξ) head: (B, d) → (B, 2k)
        self.encoder = build_encoder(self.net, config.dim, 2 * k, image_shape)
        self.decoder = build_decoder(self.net, k, config.dim, image_shape)
        if self.likelihood.trains_on_nll:
            init = math.log(config.sigma if config.sigma is not None else 1.0)
        else:
            init = self.likelihood.fixed_log_scale or 0.0
        if config.learn_sigma:  # only with a likelihood that trains on its NLL (VAEConfig.check)
            self.log_scale = nn.Parameter(torch.full((config.dim,), init))
        else:
            self.register_buffer("log_scale", torch.tensor(init))

    @property
    def dim(self) -> int:  # type: ignore[override]
        """d, the data dimension."""
        return self.config.dim

    @property
    def latent(self) -> int:  # type: ignore[override]
        """k, the latent dimension."""
        return self.config.latent

    # --- the lecture's maps ------------------------------------------------------------------

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (μ, ξ), each (n, k): the mean and log-variance of q(z | x) = N(μ, e^ξ)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: Tensor) -> Tensor:
        """Return the posterior means μ(x), shape (n, k): the codes of x (n, d)."""
        return self.encoder(x).chunk(2, dim=1)[0]

    @property
    def prior_is_trained(self) -> bool:
        """Whether p(z) is trained with the nets (``prior="vamp"`` or ``"flow"``)."""
        return self.config.prior in TRAINED_PRIORS

    @property
    def training_prior(self) -> BaseMeasure:
        """The prior p(z) the model was trained with and its likelihood is scored under: N(0, I_k)
        (for ``prior="gmm"`` too: the mixture is only a sampler), or the trained prior."""
        if self.prior_is_trained:
            return TrainedPriorMeasure(self.prior_net, self.posterior, self.latent)
        return StandardNormal(self.latent)

    def prepare(self, x: Tensor) -> None:
        """Start a trained prior from the training data x (n, d) (the VampPrior's pseudo-inputs
        at training rows); nothing for the others."""
        if self.prior_is_trained:
            self.prior_net.prepare(x)

    @property
    def has_sampler(self) -> bool:
        """Whether the model samples from an ex-post sampler (``prior="gmm"``) rather than from
        :attr:`training_prior`."""
        return self.config.prior == "gmm"

    @property
    def latent_measure(self) -> BaseMeasure:
        """The measure z is drawn from to sample: :attr:`training_prior`, or the Gaussian mixture
        fitted to the codes (``prior="gmm"``, the sampler)."""
        if not self.has_sampler:
            return self.training_prior
        mixture = GaussianMixture(
            self.prior_weights.cpu(), self.prior_means.cpu(), self.prior_covariances.cpu()
        )
        return MixtureMeasure(mixture)

    @torch.no_grad()
    def finish(self, x: Tensor) -> None:
        """Fit the ``gmm`` prior to the posterior means μ(x) (n, k) of the training data x (n, d)
        (:func:`~pushforward.models.vae.prior.fit_mixture_prior`, on at most
        :data:`~pushforward.models.vae.prior.PRIOR_FIT_ROWS` rows); nothing for N(0, I)."""
        if self.config.prior != "gmm":
            return
        codes = torch.cat([self.encode(xb).double().cpu() for xb in fit_rows(x).split(4096)])
        fitted = fit_mixture_prior(codes, self.config.prior_components)
        for name, tensor in zip(PRIOR_BUFFERS, fitted, strict=True):
            getattr(self, name).copy_(tensor)

    def reparameterize(
        self, mu: Tensor, logvar: Tensor, *, generator: torch.Generator | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """Return z = μ + exp(ξ/2)·ε, shape of μ, with ε ~ N(0, I) drawn from ``generator``, or
        ``eps`` (shape of μ) where the caller drew it."""
        if eps is None:
            eps = draw(torch.randn, mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
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
        cfg = self.config
        if cfg.kl_schedule == "constant" or epoch is None:  # (compiled: epoch not looked at)
            return cfg.kl_weight
        return KL_SCHEDULES[cfg.kl_schedule](cfg.kl_weight, epoch, cfg.kl_warmup)

    def _nll(self, x: Tensor, out: Tensor) -> Tensor:
        return negative_log_likelihood(self.likelihood.family, x, out, self.log_scale)

    fused_step: bool = True
    """Train an MLP VAE on gradients written out by hand (:mod:`pushforward.fused`: the same
    loss and gradients to rounding, no autograd graph); False: through autograd, op by op."""

    def manual_gradients(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]] | None:
        # a subclass that changes the loss or a piece of it trains through autograd, and so does
        # the flow prior (fusable says which priors the hand-written step knows)
        fused = self.fused_step and _plain_loss(type(self))
        if not (fused and fusable(self, x)):
            return None
        eps = self.draw_noise(x, generator=generator)  # the autograd loss's draw (x: float32)
        return vae_loss_and_gradients(self, x, eps, self.current_kl_weight(epoch))

    def draw_noise(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return the draws :meth:`loss` makes on a batch x (B, d): ε (B, k) ~ N(0, I), float32
        whatever the autocast (the noise, the KL and the likelihood are float32)."""
        shape = (x.shape[0], self.latent)
        return draw(torch.randn, shape, generator=generator, device=x.device, dtype=torch.float32)

    @outside_graph
    def _kl_weight_tensor(self, epoch: float | Tensor | None, device: torch.device) -> Tensor:
        """Return λ at ``epoch`` (a compiled loss's 0-d tensor) as a 0-d tensor on ``device``."""
        at = float(epoch) if isinstance(epoch, Tensor) else epoch
        return torch.tensor(self.current_kl_weight(at), device=device)

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:  # fmt: skip
        """Return {'loss', 'reconstruction', 'kl'} on a batch x (B, d), with ε (B, k) drawn from
        ``generator``, or ``noise`` where the caller drew it (:meth:`draw_noise`). λ and ε come
        before any weight is read: compiled, the draw and λ's lookup run outside the graph and,
        at the start, split nothing (the step is one graph; the encoder draws nothing)."""
        if self.config.kl_schedule == "constant" or not torch.compiler.is_compiling():
            lam: float | Tensor = self.current_kl_weight(epoch)
        else:  # a tensor: a compiled loss whose λ changes every step is compiled once
            lam = self._kl_weight_tensor(epoch, x.device)
        eps = noise if noise is not None else self.draw_noise(x, generator=generator)
        mu, logvar = self.posterior(x)
        mu, logvar = mu.float(), logvar.float()  # under bfloat16 autocast they come back bfloat16
        z = self.reparameterize(mu, logvar, eps=eps)
        out = self.decoder(z).float()
        if self.likelihood.trains_on_nll:
            rec = self._nll(x, out).mean()
        else:
            rec = reconstruction(self.likelihood.family, x, out).mean()
        if self.prior_is_trained:  # from the same draw: log q(z | x) − log p(z)
            kl = self._sampled_kl(z, mu, logvar, self.training_prior).mean()
            return {"loss": rec + lam * kl, "reconstruction": rec, "kl": kl}
        kl_dims = gaussian_kl_terms(mu, logvar).mean(0)  # (k,) batch-mean KL per dimension
        kl = kl_dims.sum()
        free_bits = self.config.free_bits
        kl_penalty = kl_dims.clamp_min(free_bits).sum() if free_bits > 0 else kl
        return {"loss": rec + lam * kl_penalty, "reconstruction": rec, "kl": kl}

    @staticmethod
    def _sampled_kl(z: Tensor, mu: Tensor, logvar: Tensor, prior: BaseMeasure) -> Tensor:
        """Return log q(z | x) − log p(z) (n,) at the draws z (n, k) of q = N(μ, e^ξ)."""
        return posterior_log_prob(standardise(z, mu, logvar), logvar) - prior.log_prob(z)

    # --- the MLE view ------------------------------------------------------------------------

    @torch.no_grad()
    def elbo(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 1000,
        sampler: bool = False,
    ) -> dict[str, Tensor]:
        """Return the per-example ELBO in nats and its two terms, each (n,), for x (n, d).

        ELBO(x) = E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)) with p(z) the
        :attr:`training_prior`, the expectation estimated with one reparameterised draw, every
        normalising constant included; the KL in closed form for N(0, I), estimated from the
        same draw as log q(z | x) − log p(z) for a trained prior. With ``sampler`` and
        an ex-post sampler (:attr:`has_sampler`), also ``elbo_sampler`` and ``kl_sampler``: the
        same with p(z) the sampler, its KL estimated from the same draw as
        log q(z | x) − log p(z).
        """
        check_rows(x, "x", dim=self.dim)
        priors = {"": self.training_prior if self.prior_is_trained else None}
        if sampler and self.has_sampler:
            priors["_sampler"] = self.latent_measure
        parts: dict[str, list[Tensor]] = {}
        for xb in x.split(batch_size):
            mu, logvar = self.posterior(xb)
            z = self.reparameterize(mu, logvar, generator=generator)
            log_px_z = -self._nll(xb, self.decoder(z))
            parts.setdefault("log_px_given_z", []).append(log_px_z)
            for suffix, prior in priors.items():
                if prior is None:
                    kl = gaussian_kl_terms(mu, logvar).sum(1)
                else:
                    kl = self._sampled_kl(z, mu, logvar, prior)
                parts.setdefault(f"elbo{suffix}", []).append(log_px_z - kl)
                parts.setdefault(f"kl{suffix}", []).append(kl)
        return {k: torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        k: int = 1000,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 100,
        max_elements: int | None = None,
        sampler: bool = False,
    ) -> LogLikelihood:
        """Return the importance-weighted estimate log (1/k) Σ_j p(x, z_j)/q(z_j | x), z_j ~ q.

        Per example (n,) for x (n, d), with its Monte Carlo standard error; p(z) the
        :attr:`training_prior`, or with ``sampler`` the measure samples are drawn from
        (:attr:`latent_measure`). Memory stays bounded: rows go ``batch_size`` at a time and
        samples in chunks of at most ``max_elements`` decoder outputs (default
        :data:`~pushforward.models.vae.iwae.IWAE_CHUNK`); weights are combined with
        running log-sum-exp sums. The estimate never exceeds log p(x) in expectation and rises
        to it as k grows (Burda et al., 2016).
        """
        check_rows(x, "x", dim=self.dim)
        prior = self.latent_measure if sampler else self.training_prior
        return iwae_log_likelihood(
            self, x, k, prior=prior, generator=generator, batch_size=batch_size,
            max_elements=max_elements,
        )  # fmt: skip

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
        log-likelihood with ``iwae_k`` importance samples (summarised over rows as every
        likelihood is, :func:`~pushforward.measures.likelihood_summary`, with its Monte Carlo
        standard error beside), bits per dimension, and the latent diagnostics, for x (n, d);
        nats per example. The likelihoods are under the :attr:`training_prior`; with an ex-post
        sampler, the ELBO, KL and IWAE likelihood under the sampler are beside, their keys ending
        ``_sampler`` (from the same draws)."""
        out = super().evaluate(x, generator=generator)
        e = self.elbo(x, generator=generator, sampler=True)
        priors = [self.training_prior] + ([self.latent_measure] if self.has_sampler else [])
        ll, *ll_sampler = iwae_log_likelihoods(self, x, iwae_k, priors, generator=generator)
        out.update(
            elbo=float(e["elbo"].mean()),
            neg_elbo=-float(e["elbo"].mean()),
            log_px_given_z=float(e["log_px_given_z"].mean()),
            kl=float(e["kl"].mean()),
            iwae_k=iwae_k,
            iwae_stderr=ll.mean_stderr,
            **likelihood_summary(ll.log_px, dim=self.dim, exact=False),
        )
        if ll_sampler:
            summary = likelihood_summary(ll_sampler[0].log_px, dim=self.dim, exact=False)
            out.update(
                elbo_sampler=float(e["elbo_sampler"].mean()),
                neg_elbo_sampler=-float(e["elbo_sampler"].mean()),
                kl_sampler=float(e["kl_sampler"].mean()),
                log_likelihood_sampler=summary["log_likelihood"],
                log_likelihood_sampler_stderr=summary["log_likelihood_stderr"],
            )
        diagnostics = self.diagnostics(x, generator=generator)
        out.update({k: v for k, v in diagnostics.items() if k != "posterior_collapse"})
        return out

    # --- diagnostics -------------------------------------------------------------------------

    @torch.no_grad()
    def diagnostics(self, x: Tensor, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Return KL per latent dimension, the number of active units, and a collapse flag, for
        x (n, d) (:func:`~pushforward.models.vae.posterior.posterior_diagnostics`)."""
        active, kl_dims = posterior_diagnostics(self.posterior, x, generator=generator)
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


SPEC = ModelSpec(
    VAE,
    VAEConfig,
    "the variational autoencoder: encoder (μ, ξ), decoder g, loss R + λ·KL",
    train_defaults={"lr": 3e-3, "batch_size": 64, "precision": "auto"},
    kind_train_defaults={"points": RECOMMENDED_POINTS["train"]},
)
