"""Measures: base measures μ, Pushforward(g, μ), 1-D maps, discrete pushforwards. Imports core and
data."""

from pushforward.measures.discrete import DiscreteMeasure, die, product, two_dice_sum
from pushforward.measures.pushforward import (
    EXAMPLES,
    BaseMeasure,
    DistributionMeasure,
    Example,
    Map1D,
    MixtureMeasure,
    Pushforward,
    Restricted,
    StandardNormal,
    Uniform,
    as_measure,
    empirical_quantile,
    example,
    inverse_cdf,
)

__all__ = [
    "EXAMPLES",
    "BaseMeasure",
    "DiscreteMeasure",
    "DistributionMeasure",
    "Example",
    "Map1D",
    "MixtureMeasure",
    "Pushforward",
    "Restricted",
    "StandardNormal",
    "Uniform",
    "as_measure",
    "die",
    "empirical_quantile",
    "example",
    "inverse_cdf",
    "product",
    "two_dice_sum",
]
