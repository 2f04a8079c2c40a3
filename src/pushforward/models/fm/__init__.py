"""Flow matching: g#μ as the end of an ODE, with its exact log-likelihood.

A network v_θ(t, x) defines the ODE dx/dt = v_θ(t, x) on t ∈ [0, 1]; its flow map from t = 0 to
t = 1 is the pushforward g, with μ = N(0, I_d) at t = 0 and (after training) the data at t = 1.
Conditional flow matching (Lipman et al., 2023; Tong et al., 2024) trains v_θ by regression, with
no ODE solved during training: draw x₀ ~ μ, a data row x₁ and a time t ∈ [0, 1]
(:data:`TIME_POWER`), set

    x_t = t·x₁ + (1 − (1 − σ)·t)·x₀,     u_t = x₁ − (1 − σ)·x₀,

and minimise E ‖v_θ(t, x_t) − u_t‖². Its minimiser is the marginal field whose flow carries μ to
the data convolved with N(0, σ²) (σ is the conditional path's width at t = 1, Lipman's σ_min, 0
by default, in standardised units). The pairing of x₀ with x₁ is the ``coupling``:

* ``independent``: x₀ drawn independently of x₁ (I-CFM);
* ``ot``: within each minibatch, the x₀ are re-assigned to the x₁ by the exact optimal-transport
  permutation of squared Euclidean cost (an exact assignment, :func:`ot_pairing`): OT-CFM,
  whose straighter paths need fewer solver steps. The exact problem is solved on blocks of
  :data:`OT_BLOCK` rows of each batch, as its cost grows faster than the square of its size.

The regression's target may be averaged over the posterior of x₁ given x_t among ``reference``
rows of the batch, the *stable target* (:func:`stable_target`; Xu et al., 2023): the same
minimiser, far less noise where paths from several modes cross. The field also reads Fourier
features sin/cos(2ᵏ ω·x) of its input (``frequencies``, :class:`VelocityField`), which let a small
MLP draw the sharp basins of narrow modes, along fixed directions ω evenly spread over the half
circle (``features="even"``, :mod:`~pushforward.models.fm.features`): features per coordinate
alone drew ridges along the axes through every mode of the density, and random directions fit
an axis-aligned lattice less closely. Both levers are on by default on
points and off on images (:data:`RECOMMENDED`, :data:`RECOMMENDED_IMAGES`). Square images may
take a small time-conditioned U-Net instead of the MLP (``net="unet"``, :class:`UNetField`). With
the OT coupling, :func:`~pushforward.train.fit` pairs the next batches in a second process while
the current step trains (:meth:`FlowMatching.prepare_batch`, :mod:`pushforward.prefetch`).

The log-likelihood is exact, by the instantaneous change of variables (Chen et al., 2018):

    log p₁(x) = log μ(x₀) − ∫₀¹ tr ∂v/∂x (t, x_t) dt,

integrated backwards from x₁ = x with the ODE. The trace is exact (d backward passes per
evaluation) for d ≤ :data:`EXACT_TRACE_MAX_DIM`; above it ``trace="auto"`` uses Hutchinson's
estimator εᵀ(∂v/∂x)ε with Rademacher ε fixed along each path (FFJORD; Grathwohl et al., 2019):
unbiased for log p, with a standard error, and labelled as an estimate
(:data:`HUTCHINSON_ESTIMATE`).

The ODE is solved by torchdiffeq: ``solver="dopri5"`` is adaptive (``rtol``, ``atol``); ``euler``,
``midpoint`` and ``rk4`` take ``steps`` equal steps. Every solve counts its function evaluations
(:attr:`FlowMatching.last_nfe`), and one that needs more than ``max_nfe`` stops with a
:class:`~pushforward.core.SolverError` naming t and the step size (a stiff field, tolerances
too tight); so do non-finite values of the field (:mod:`pushforward.models.fm.ode`).

Data are standardised per coordinate to unit spread first (the log-Jacobian is counted, so
densities are in the data's units); images are dequantised and sent through RealNVP's logit as
for the normalizing flows (the shared :mod:`pushforward.data.preprocess`).

The modules: :mod:`~pushforward.models.fm.features` (the Fourier features of x),
:mod:`~pushforward.models.fm.fields` (the networks v_θ),
:mod:`~pushforward.models.fm.coupling` (the OT pairing and the stable target),
:mod:`~pushforward.models.fm.ode` (solving under a budget), :mod:`~pushforward.models.fm.config`
(the settings) and :mod:`~pushforward.models.fm.model` (the model).

Recommended settings (ring8 and grid25, ``benchmarks/fidelity.py``): :data:`RECOMMENDED`.
"""

from pushforward.models.fm.config import (
    EXACT_TRACE_MAX_DIM,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    TRACES,
    FlowMatchingConfig,
)
from pushforward.models.fm.coupling import COUPLINGS, OT_BLOCK, ot_pairing, stable_target
from pushforward.models.fm.features import FEATURES, FourierFeatures
from pushforward.models.fm.fields import FIELD_NETS, UNetField, VelocityField
from pushforward.models.fm.model import HUTCHINSON_ESTIMATE, FlowMatching
from pushforward.models.fm.ode import SOLVERS

__all__ = [
    "COUPLINGS",
    "EXACT_TRACE_MAX_DIM",
    "FEATURES",
    "FIELD_NETS",
    "HUTCHINSON_ESTIMATE",
    "OT_BLOCK",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "SOLVERS",
    "TRACES",
    "FlowMatching",
    "FlowMatchingConfig",
    "FourierFeatures",
    "UNetField",
    "VelocityField",
    "ot_pairing",
    "stable_target",
]
