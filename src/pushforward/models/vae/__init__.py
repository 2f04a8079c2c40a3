"""The variational autoencoder and its hand-written gradients."""

from pushforward.models.vae.config import RECOMMENDED_POINTS, VAEConfig
from pushforward.models.vae.fused import (
    FUSED_ACTIVATIONS,
    fusable,
    parameters,
    vae_loss_and_gradients,
)
from pushforward.models.vae.iwae import LogLikelihood, iwae_log_likelihood, iwae_log_likelihoods
from pushforward.models.vae.likelihoods import KL_SCHEDULES, LIKELIHOODS, Likelihood
from pushforward.models.vae.model import VAE
from pushforward.models.vae.posterior import LOGVAR_RANGE, posterior_log_prob, standardise
from pushforward.models.vae.prior import MAX_PRIOR_COMPONENTS, PRIORS, fit_mixture_prior

__all__ = [
    "FUSED_ACTIVATIONS",
    "KL_SCHEDULES",
    "LIKELIHOODS",
    "LOGVAR_RANGE",
    "MAX_PRIOR_COMPONENTS",
    "PRIORS",
    "RECOMMENDED_POINTS",
    "VAE",
    "Likelihood",
    "LogLikelihood",
    "VAEConfig",
    "fit_mixture_prior",
    "fusable",
    "iwae_log_likelihood",
    "iwae_log_likelihoods",
    "parameters",
    "posterior_log_prob",
    "standardise",
    "vae_loss_and_gradients",
]
