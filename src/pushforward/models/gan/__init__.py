"""The generative adversarial network: the model, its settings, objectives, penalties and
Jacobian truncation."""

from pushforward.models.gan.config import (
    GAN_CONV_WIDTHS,
    NOISES,
    OUTPUTS,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    GANConfig,
)
from pushforward.models.gan.model import GAN
from pushforward.models.gan.objectives import GAN_LOSSES, GANLoss
from pushforward.models.gan.penalties import PENALTIES, gradient_penalty, r1_penalty
from pushforward.models.gan.truncation import TRUNCATION, TRUNCATION_DRAWS

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
