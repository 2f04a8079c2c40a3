"""Exact discrete pushforwards: the two-dice example and the enumeration machinery."""

from fractions import Fraction

import pytest
import torch

from pushforward.core import ConfigError
from pushforward.measures import DiscreteMeasure, die, product, two_dice_sum


def test_two_dice_sum_three_is_one_eighteenth():
    assert two_dice_sum().prob(3) == Fraction(1, 18)


def test_two_dice_whole_pmf_is_the_triangle():
    y = two_dice_sum()
    assert y.support == list(range(2, 13))
    for s in range(2, 13):
        assert y.prob(s) == Fraction(6 - abs(s - 7), 36)
    assert sum(y.pmf.values()) == 1
    assert y.expectation() == 7
    assert y.prob(13) == 0


def test_pushforward_of_product_by_enumeration_max_of_two_dice():
    m = product(die(), die()).pushforward(max)
    assert m.prob(6) == Fraction(11, 36)
    assert m.prob(1) == Fraction(1, 36)


def test_sampling_frequencies_approach_the_pmf():
    y = two_dice_sum()
    n = 200_000
    draws = torch.tensor(y.sample(n, generator=torch.Generator().manual_seed(0)))
    assert draws.shape == (n,)
    assert abs(float((draws == 7).double().mean()) - 1 / 6) < 0.005
    assert abs(float((draws == 3).double().mean()) - 1 / 18) < 0.003


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: DiscreteMeasure({1: 0.5, 2: 0.5}), "exact rational"),
        (lambda: DiscreteMeasure({1: Fraction(1, 3), 2: Fraction(1, 3)}), "sum to exactly 1"),
        (lambda: DiscreteMeasure({1: Fraction(-1), 2: Fraction(2)}), "negative"),
        (lambda: die(0), "sides must be"),
        (lambda: DiscreteMeasure.uniform([]), "at least one value"),
        (lambda: product(), "at least one measure"),
    ],
)
def test_bad_measures_are_refused(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
