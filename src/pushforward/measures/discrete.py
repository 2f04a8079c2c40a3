"""Exact discrete pushforwards by enumeration, in exact fractions.

A discrete measure is a finite table value → probability. Pushing it through g sums the
probability of every outcome that g sends to the same value: Pr[Y = y] = Σ_{x: g(x) = y} Pr[X = x].
With two fair dice and Y = X₁ + X₂ this gives Pr[Y = 3] = 2/36 = 1/18 exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping
from fractions import Fraction
from numbers import Rational

import torch

from pushforward.core import ConfigError, check_n

__all__ = ["DiscreteMeasure", "die", "product", "two_dice_sum"]


class DiscreteMeasure:
    """A probability measure on finitely many values, with exact ``Fraction`` probabilities.

    ``pmf`` maps each value to its probability; probabilities must be non-negative rationals
    summing to exactly 1. Zero-probability values are dropped.
    """

    def __init__(self, pmf: Mapping[Hashable, Rational | int]):
        table: dict[Hashable, Fraction] = {}
        for value, p in pmf.items():
            if isinstance(p, float) or not isinstance(p, Rational):
                raise ConfigError(
                    f"probability of {value!r} must be an exact rational (int or Fraction), "
                    f"got {p!r}"
                )
            q = Fraction(p)
            if q < 0:
                raise ConfigError(f"probability of {value!r} is negative: {q}")
            if q:
                table[value] = table.get(value, Fraction(0)) + q
        total = sum(table.values(), Fraction(0))
        if total != 1:
            raise ConfigError(f"probabilities must sum to exactly 1, got {total}")
        self.pmf: dict[Hashable, Fraction] = dict(sorted(table.items(), key=_sort_key))

    @classmethod
    def uniform(cls, values: Iterable[Hashable]) -> DiscreteMeasure:
        """Return the uniform measure on the distinct ``values``."""
        support = list(dict.fromkeys(values))
        if not support:
            raise ConfigError("a uniform discrete measure needs at least one value")
        return cls({v: Fraction(1, len(support)) for v in support})

    @property
    def support(self) -> list[Hashable]:
        """The values with positive probability, sorted."""
        return list(self.pmf)

    def prob(self, value: Hashable) -> Fraction:
        """Return Pr[X = value] exactly (0 off the support)."""
        return self.pmf.get(value, Fraction(0))

    def pushforward(self, g: Callable[..., Hashable]) -> DiscreteMeasure:
        """Return g#P by enumeration; tuple values are unpacked into g's arguments."""
        out: dict[Hashable, Fraction] = {}
        for value, p in self.pmf.items():
            y = g(*value) if isinstance(value, tuple) else g(value)
            out[y] = out.get(y, Fraction(0)) + p
        return DiscreteMeasure(out)

    def expectation(self, f: Callable[[Hashable], Rational | int] | None = None) -> Fraction:
        """Return E[f(X)] exactly (E[X] when f is None; values must then be rational)."""
        f = f or (lambda v: v)
        return sum((p * Fraction(f(v)) for v, p in self.pmf.items()), Fraction(0))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> list[Hashable]:
        """Return n draws (a list of values), chosen with ``generator``."""
        n = check_n(n, allow_zero=True)
        probs = torch.tensor([float(p) for p in self.pmf.values()], dtype=torch.float64)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator) if n else []
        support = self.support
        return [support[i] for i in torch.as_tensor(idx).tolist()]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DiscreteMeasure) and self.pmf == other.pmf

    def __repr__(self) -> str:
        body = ", ".join(f"{v!r}: {p}" for v, p in self.pmf.items())
        return f"DiscreteMeasure({{{body}}})"


def _sort_key(item: tuple[Hashable, Fraction]) -> tuple[int, object]:
    value = item[0]
    try:
        value < value  # noqa: B015 - probe for an ordering
        return (0, value)
    except TypeError:
        return (1, repr(value))


def product(*measures: DiscreteMeasure) -> DiscreteMeasure:
    """Return the product measure of independent factors; values are tuples (x₁, …, x_m)."""
    if not measures:
        raise ConfigError("product needs at least one measure")
    pmf = {}
    for combo in itertools.product(*(m.pmf.items() for m in measures)):
        value = tuple(v for v, _ in combo)
        p = Fraction(1)
        for _, q in combo:
            p *= q
        pmf[value] = p
    return DiscreteMeasure(pmf)


def die(sides: int = 6) -> DiscreteMeasure:
    """Return a fair die: uniform on {1, …, sides}."""
    if isinstance(sides, bool) or not isinstance(sides, int) or sides < 1:
        raise ConfigError(f"sides must be an integer ≥ 1, got {sides!r}")
    return DiscreteMeasure.uniform(range(1, sides + 1))


def two_dice_sum(sides: int = 6) -> DiscreteMeasure:
    """Return the law of Y = X₁ + X₂ for two independent fair dice (Pr[Y = 3] = 1/18)."""
    d = die(sides)
    return product(d, d).pushforward(lambda a, b: a + b)
