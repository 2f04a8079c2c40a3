"""The layers of a flow, by name: each family builds a stack of zuko transforms.

The layers come from zuko (each is a ``torch.distributions.Transform``), by name
(:data:`TRANSFORMS`):

* ``nsf``: monotone rational-quadratic splines with ``bins`` bins, in coupling layers: half the
  coordinates pass unchanged and set the splines of the other half, the halves alternating from
  layer to layer (Durkan et al., 2019, "Neural Spline Flows"; zuko's NSF with ``passes=2``);
* ``nsf-ar``: the same splines, fully autoregressive: coordinate i's spline depends on
  coordinates < i (a masked network, MADE); sampling then inverts coordinate by coordinate;
* ``realnvp``: affine coupling layers, x_b ↦ exp(a(x_a))·x_b + b(x_a) (Dinh et al., 2017);
* ``maf``: affine autoregressive layers (Papamakarios et al., 2017, "Masked Autoregressive Flow").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import zuko
from torch.distributions import Transform

__all__ = [
    "AFFINE_SLOPE",
    "MAX_BINS",
    "MAX_LAYERS",
    "SPLINE_SLOPE",
    "TRANSFORMS",
    "FlowTransform",
]

MAX_LAYERS = 256
"""The most flow layers; more is a typo."""

MAX_BINS = 1024
"""The most spline bins; each costs three outputs of the conditioner per coordinate."""

SPLINE_SLOPE = 1e-5
"""The splines' default smallest slope (zuko's ``slope``, whose own default is 1e-3): each spline's
knot derivatives and bin-size ratios are held within [slope, 1/slope]. Sharp modes need steep
maps between them (BENCHMARKS.md, "Fidelity to the truth")."""

AFFINE_SLOPE = 1e-3
"""The affine layers' default smallest scale (zuko's default): scales stay within [1e-3, 1e3]; the
splines' 1e-5 lets an affine flow start far off on images (BENCHMARKS.md, "Fidelity to the
truth")."""


@dataclass(frozen=True)
class FlowTransform:
    """A family of flow layers: ``build(dim, layers, hidden, bins, slope)`` returns a zuko flow."""

    build: Callable[[int, int, list[int], int, float], zuko.flows.Flow]
    description: str  # a few words, for help texts
    slope: float  # the default smallest slope of a layer


def _nsf(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.NSF(
        dim, transforms=layers, bins=bins, hidden_features=hidden, passes=2, slope=slope
    )


def _nsf_ar(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.NSF(dim, transforms=layers, bins=bins, hidden_features=hidden, slope=slope)


def _affine(slope: float) -> Callable[..., Transform]:
    return functools.partial(zuko.transforms.MonotonicAffineTransform, slope=slope)


def _realnvp(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.RealNVP(
        dim, transforms=layers, hidden_features=hidden, univariate=_affine(slope)
    )


def _maf(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.MAF(dim, transforms=layers, hidden_features=hidden, univariate=_affine(slope))


TRANSFORMS: dict[str, FlowTransform] = {
    "nsf": FlowTransform(_nsf, "spline coupling", SPLINE_SLOPE),
    "nsf-ar": FlowTransform(_nsf_ar, "spline autoregressive", SPLINE_SLOPE),
    "realnvp": FlowTransform(_realnvp, "affine coupling", AFFINE_SLOPE),
    "maf": FlowTransform(_maf, "affine autoregressive", AFFINE_SLOPE),
}
