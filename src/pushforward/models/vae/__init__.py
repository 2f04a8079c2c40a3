"""The variational autoencoder and its hand-written gradients."""

from pushforward.models.vae.fused import (
    FUSED_ACTIVATIONS,
    fusable,
    parameters,
    vae_loss_and_gradients,
)
from pushforward.models.vae.model import (
    KL_SCHEDULES,
    LIKELIHOODS,
    PRIORS,
    VAE,
    LogLikelihood,
    VAEConfig,
)

__all__ = [
    "FUSED_ACTIVATIONS",
    "KL_SCHEDULES",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "LogLikelihood",
    "VAEConfig",
    "fusable",
    "parameters",
    "vae_loss_and_gradients",
]
