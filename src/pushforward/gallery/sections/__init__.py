"""The lecture's sections of the gallery, one module each; the five mixture sections' parts are
run per mixture by :mod:`pushforward.gallery.chain`."""

from pushforward.gallery.sections.common import (
    FRAMES,
    every,
    extent_of,
    grid_over,
    mixture_gif,
)
from pushforward.gallery.sections.data import data_section
from pushforward.gallery.sections.encoders import encoders_section
from pushforward.gallery.sections.fidelity import (
    FIDELITY_HEADER,
    Truth,
    fidelity_row,
    fidelity_section,
)
from pushforward.gallery.sections.flow import flow_digits, flow_epochs, flow_mixture, flow_section
from pushforward.gallery.sections.fm import FM_TIMES, fm_epochs, fm_mixture, fm_section
from pushforward.gallery.sections.gan_digits import (
    GALLERY_GAN,
    gan_digits_section,
    interpolation,
)
from pushforward.gallery.sections.gan_mixtures import (
    GAN_HEADER,
    gan_epochs,
    gan_mixture,
    gan_section,
)
from pushforward.gallery.sections.mixtures import mixtures_section, vae_mixture
from pushforward.gallery.sections.univariate import dice_section, univariate_section
from pushforward.gallery.sections.vae_digits import vae_digits_section

__all__ = [
    "FIDELITY_HEADER",
    "FM_TIMES",
    "FRAMES",
    "GALLERY_GAN",
    "GAN_HEADER",
    "Truth",
    "data_section",
    "dice_section",
    "encoders_section",
    "every",
    "extent_of",
    "fidelity_row",
    "fidelity_section",
    "flow_digits",
    "flow_epochs",
    "flow_mixture",
    "flow_section",
    "fm_epochs",
    "fm_mixture",
    "fm_section",
    "gan_digits_section",
    "gan_epochs",
    "gan_mixture",
    "gan_section",
    "grid_over",
    "interpolation",
    "mixture_gif",
    "mixtures_section",
    "univariate_section",
    "vae_digits_section",
    "vae_mixture",
]
