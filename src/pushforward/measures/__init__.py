"""Measures: base measures μ, Pushforward(g, μ), 1-D maps, discrete pushforwards. Imports core and
data."""

from pushforward.measures.base import (
    BaseMeasure,
    DistributionMeasure,
    MixtureMeasure,
    Restricted,
    StandardNormal,
    Uniform,
    as_measure,
    draw,
)
from pushforward.measures.discrete import DiscreteMeasure, die, product, two_dice_sum
from pushforward.measures.examples import EXAMPLES, Example, example
from pushforward.measures.gaussian import LOG_2PI, likelihood_summary, standard_normal_log_prob
from pushforward.measures.pieces import PIECES_SEED, GaussianPieces, piece_centres
from pushforward.measures.pushforward import Map1D, Pushforward, empirical_quantile, inverse_cdf

__all__ = [
    "EXAMPLES",
    "LOG_2PI",
    "PIECES_SEED",
    "BaseMeasure",
    "DiscreteMeasure",
    "DistributionMeasure",
    "Example",
    "GaussianPieces",
    "Map1D",
    "MixtureMeasure",
    "Pushforward",
    "Restricted",
    "StandardNormal",
    "Uniform",
    "as_measure",
    "die",
    "draw",
    "empirical_quantile",
    "example",
    "inverse_cdf",
    "likelihood_summary",
    "piece_centres",
    "product",
    "standard_normal_log_prob",
    "two_dice_sum",
]
