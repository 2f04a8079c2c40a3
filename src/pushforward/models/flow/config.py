"""The settings of a flow (:class:`FlowConfig`) and the benchmarked ones (:data:`RECOMMENDED`)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushforward.core import ConfigError, ModelConfig, setting
from pushforward.models.flow.base import BASES, MAX_PIECES, PIECES
from pushforward.models.flow.transforms import MAX_BINS, MAX_LAYERS, TRANSFORMS
from pushforward.nets import MAX_LATENT, MAX_WIDTH

if TYPE_CHECKING:
    from pushforward.data import Dataset
    from pushforward.models.flow.model import Flow

__all__ = ["MAX_FLOW_BYTES", "REACH", "RECOMMENDED", "SPREAD", "FlowConfig"]

MAX_FLOW_BYTES = 4 * 2**30
"""The most weights a flow may have (4 GiB of float32): a larger one is a typo."""

SPREAD = 3.0
"""The standard deviation of standardised (non-image) data in the layers' units (see the module
docstring)."""

REACH = 4.5
"""How far from the mean, in the layers' units, standardisation lets the data reach (their 99.9th
percentile of |x − m| per coordinate), inside the splines' [−5, 5]: the scale is the larger of
std/:data:`SPREAD` and that percentile/REACH, so that data whose extremes lie few standard
deviations out (moons) do not spill past ±5, where the layers are the identity; on ring8 and
grid25 std/3 is the larger (BENCHMARKS.md, "Fidelity to the truth")."""


RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {"transform": "nsf", "layers": 4, "hidden": [48, 48], "bins": 24},
    "train": {"epochs": 90, "batch_size": 512, "lr": 8e-3, "lr_schedule": "cosine"},
}
"""The benchmarked setting (ring8 and grid25, ``benchmarks/fidelity.py``; BENCHMARKS.md, "Fidelity
to the truth", has what else was tried)."""


@dataclass
class FlowConfig(ModelConfig):
    """The settings of a flow: those a user chooses (the CLI's flags) and those derived from the
    data, filled in by :meth:`build` (or, left None, by :meth:`filled`).

    Args:
        transform: the layers by name (:data:`TRANSFORMS`): ``nsf``, ``nsf-ar``, ``realnvp``,
            ``maf``. The defaults of this and the next three are :data:`RECOMMENDED`'s.
        layers: how many invertible layers.
        hidden: the widths of each layer's conditioner network.
        bins: spline bins per coordinate (``nsf`` and ``nsf-ar``; ignored by the affine ones).
        dim: data dimension d (derived).
        image_shape: (h, w) of image data (derived).
        slope: the smallest slope of each layer, in (0, 1): spline derivatives and bin-size
            ratios, or affine scales, stay within [slope, 1/slope]; None: the transform's
            (:data:`SPLINE_SLOPE` for splines, :data:`AFFINE_SLOPE` for affine layers).
        standardize: act on (x − m)/s with the training data's mean m and s its standard
            deviation over :data:`SPREAD` (d,) (unit spread for dequantised images), recorded by
            :meth:`Flow.prepare`; the log-Jacobian −Σ log s is counted. None: on for non-image
            data (no ``image_shape``), off for images.
        dequantize: treat the data as 8-bit pixels in [0, 1] (see the module docstring); None:
            on for images (``image_shape`` given).
        base: the base measure μ (:data:`~pushforward.models.flow.base.BASES`): ``normal``,
            N(0, I_d), or ``mixture``, a mixture of Gaussians learned with the layers.
        pieces: the mixture base's number of pieces K.
    """

    transform: str = setting(
        RECOMMENDED["model"]["transform"],
        "the layers: " + ", ".join(f"{name} ({t.description})" for name, t in TRANSFORMS.items()),
        choices=TRANSFORMS,
        what="flow transform",
    )
    layers: int = setting(
        RECOMMENDED["model"]["layers"], "how many invertible layers", minimum=1, maximum=MAX_LAYERS
    )
    hidden: list[int] = setting(
        RECOMMENDED["model"]["hidden"],
        "widths of each layer's conditioner network, e.g. 64,64",
        minimum=1,
        maximum=MAX_WIDTH,
    )
    bins: int = setting(
        RECOMMENDED["model"]["bins"],
        "spline bins per coordinate (nsf, nsf-ar)",
        minimum=2,
        maximum=MAX_BINS,
    )
    dim: int | None = setting(
        None, "the data's dimension d", minimum=1, maximum=MAX_LATENT, derived=True
    )
    image_shape: tuple[int, int] | None = setting(
        None, "(h, w) of image data", minimum=1, derived=True
    )
    slope: float | None = setting(
        None, "the layers' smallest slope (default: the transform's)", above=0, below=1,
        derived=True,
    )  # fmt: skip
    standardize: bool | None = setting(
        None, "standardise the data (default: on for points, off for images)", derived=True
    )
    dequantize: bool | None = setting(
        None, "dequantise 8-bit pixels (default: on for images)", derived=True
    )
    base: str = setting(
        "normal",
        "the base measure μ: " + "; ".join(f"{k} ({v})" for k, v in BASES.items()),
        choices=BASES,
        what="base measure",
    )
    pieces: int = setting(
        PIECES, "pieces of the mixture base (base = mixture)", minimum=1, maximum=MAX_PIECES
    )

    def check(self) -> None:
        if self.dim is None:
            return
        if self.image_shape is not None and math.prod(self.image_shape) != self.dim:
            raise ConfigError(
                f"image_shape {self.image_shape} does not hold dim = {self.dim} values"
            )
        # an upper bound on the weights (each layer's conditioner maps d inputs through the
        # hidden widths to at most d·(3·bins + 1) spline parameters), checked before allocating
        widths = [self.dim, *self.hidden, self.dim * (3 * self.bins + 1)]
        size = 4 * self.layers * sum(a * b + b for a, b in itertools.pairwise(widths))
        if size > MAX_FLOW_BYTES:
            raise ConfigError(
                f"a flow of {self.layers} layers of widths {self.hidden} on {self.dim} dimensions "
                f"would hold up to {size / 2**30:.1f} GiB of weights, more than "
                f"{MAX_FLOW_BYTES / 2**30:.0f} GiB"
            )

    def filled(self) -> FlowConfig:
        """Return a copy with the derived settings left None filled in (the slope by the
        transform, standardisation and dequantisation by the kind of data); ``dim`` must be
        set."""
        if self.dim is None:
            raise ConfigError("dim must be set: the data's dimension (build fills it in)")
        image = self.image_shape is not None
        fill = {
            "slope": TRANSFORMS[self.transform].slope,
            "standardize": not image,
            "dequantize": image,
        }
        return dataclasses.replace(
            self, **{k: v for k, v in fill.items() if getattr(self, k) is None}
        )

    def build(self, ds: Dataset) -> Flow:
        """Return a Flow for the data set ``ds``: its dimension, and dequantised for images."""
        from pushforward.models.flow.model import Flow

        image = ds.image_shape is not None
        return Flow(dataclasses.replace(
            self, dim=ds.dim, image_shape=ds.image_shape, dequantize=image,
        ))  # fmt: skip
