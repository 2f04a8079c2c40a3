"""Normalizing flows: a learned pushforward g#μ whose density is exact.

A flow is a bijection g: ℝ^d → ℝ^d, differentiable both ways, pushing a base measure μ forward.
Its density is the change of variables walked back from the data,

    log p(x) = log μ(g⁻¹(x)) + log |det ∂g⁻¹/∂x|,

and it is trained by maximum likelihood: the loss is −(1/B) Σ_i log p(x_i), in nats. μ is the
lecture's N(0, I_d) (``base="normal"``, the default) or a mixture of Gaussians learned with the
layers by the same likelihood (``base="mixture"``; :mod:`~pushforward.models.flow.base`). The map
g⁻¹ (data → latent, :meth:`Flow.encode`) is a stack of ``layers`` invertible layers, each
triangular, so that its log-determinant is a sum of d numbers. The layers come from zuko (each
is a ``torch.distributions.Transform``), by name (:data:`TRANSFORMS`):

* ``nsf``: monotone rational-quadratic splines with ``bins`` bins, in coupling layers: half the
  coordinates pass unchanged and set the splines of the other half, the halves alternating from
  layer to layer (Durkan et al., 2019, "Neural Spline Flows"; zuko's NSF with ``passes=2``);
* ``nsf-ar``: the same splines, fully autoregressive: coordinate i's spline depends on
  coordinates < i (a masked network, MADE); sampling then inverts coordinate by coordinate;
* ``realnvp``: affine coupling layers, x_b ↦ exp(a(x_a))·x_b + b(x_a) (Dinh et al., 2017);
* ``maf``: affine autoregressive layers (Papamakarios et al., 2017, "Masked Autoregressive Flow").

Before the layers, two fixed maps whose log-Jacobians are counted, so that the density is in the
data's own units:

* standardisation (``standardize``, on by default for points): x ↦ (x − m)/s with the data's
  per-coordinate mean m and s its standard deviation over :data:`SPREAD` (3), recorded by
  :meth:`Flow.prepare` in buffers; log-Jacobian −Σ_j log s_j. zuko's splines act on [−5, 5] (the
  identity outside): at unit spread the data would fill a third of their bins, at 3 the ±1.6
  standard deviations of ring8 and grid25 reach ±4.2 and every bin can serve (BENCHMARKS.md,
  "Fidelity to the truth"). It is off by default for images: their logits are already bounded
  (|w| ≤ 2.94), and standardising makes a rarely lit pixel an outlier of a hundred standard
  deviations, which an affine flow cannot fit; when asked for, dequantised pixels are
  standardised after the logit, to unit spread;
* dequantisation (``dequantize``, on by default for images): pixels x ∈ [0, 1] holding the 8-bit
  values k/255 are spread over their bins, y = (255·x + u)/256 with u ~ U[0, 1)^d, and sent to
  ℝ^d by RealNVP's logit, w = logit(α + (1 − 2α)·y) with α = 0.05. The flow models y; a density
  of y gives the discrete data the probability P(x) = ∫_bin p(y) dy ≥ 256^(−d)·exp E_u log p(y)
  (Jensen), so bits/dim = (−E_u log p(y)/d + log 256)/log 2, the standard convention (Theis et
  al., 2016), an upper bound on the discrete model's bits/dim.

Sampling draws z ~ μ from the caller's ``torch.Generator`` (zuko's own sampling uses the
global RNG) and returns g(z); for dequantised images the sample is the pixel bin of y,
⌊256·y⌋/255 ∈ [0, 1].

Recommended settings (the ring8/grid25 benchmark, ``benchmarks/fidelity.py``): :data:`RECOMMENDED`.

The package's modules: :mod:`~pushforward.models.flow.transforms` (the layers by name),
:mod:`~pushforward.models.flow.base` (μ), :mod:`~pushforward.models.flow.config` (the settings),
:mod:`~pushforward.models.flow.model` (:class:`Flow`).
"""

from pushforward.core import ModelSpec
from pushforward.models.flow.base import BASES, PIECES, MixtureBase
from pushforward.models.flow.config import MAX_FLOW_BYTES, REACH, RECOMMENDED, SPREAD, FlowConfig
from pushforward.models.flow.model import Flow
from pushforward.models.flow.transforms import (
    AFFINE_SLOPE,
    MAX_BINS,
    MAX_LAYERS,
    SPLINE_SLOPE,
    TRANSFORMS,
    FlowTransform,
)

__all__ = [
    "AFFINE_SLOPE",
    "BASES",
    "MAX_BINS",
    "MAX_FLOW_BYTES",
    "MAX_LAYERS",
    "PIECES",
    "REACH",
    "RECOMMENDED",
    "SPLINE_SLOPE",
    "SPREAD",
    "TRANSFORMS",
    "Flow",
    "FlowConfig",
    "FlowTransform",
    "MixtureBase",
]

SPEC = ModelSpec(
    Flow,
    FlowConfig,
    "a normalizing flow: an invertible g with an exact density (zuko transforms)",
    train_defaults=RECOMMENDED["train"],
)
