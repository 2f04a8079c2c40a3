"""The generative adversarial network."""

from pushforward.models.gan.model import (
    GAN,
    GAN_CONV_WIDTHS,
    GAN_LOSSES,
    NOISES,
    OUTPUTS,
    PENALTIES,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    TRUNCATION,
    TRUNCATION_DRAWS,
    GANConfig,
    GANLoss,
    gradient_penalty,
    r1_penalty,
)

__all__ = [
    "GAN",
    "GAN_CONV_WIDTHS",
    "GAN_LOSSES",
    "NOISES",
    "OUTPUTS",
    "PENALTIES",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "TRUNCATION",
    "TRUNCATION_DRAWS",
    "GANConfig",
    "GANLoss",
    "gradient_penalty",
    "r1_penalty",
]
