"""The settings of flow matching (:class:`FlowMatchingConfig`), each declared once, and the
benchmarked defaults they take by the kind of data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushforward.core import ConfigError, ModelConfig, setting
from pushforward.data import Dataset
from pushforward.models.fm.coupling import COUPLINGS, MAX_REFERENCE
from pushforward.models.fm.features import FEATURES
from pushforward.models.fm.fields import FIELD_NETS, MAX_FREQUENCIES, UNET_CHANNELS
from pushforward.models.fm.ode import SOLVERS, Solver
from pushforward.nets import ACTIVATIONS, MAX_LATENT, MAX_WIDTH

if TYPE_CHECKING:
    from pushforward.models.fm.model import FlowMatching

__all__ = [
    "EXACT_TRACE_MAX_DIM",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "TRACES",
    "FlowMatchingConfig",
]

EXACT_TRACE_MAX_DIM = 16
"""The largest d for which ``trace="auto"`` computes tr ∂v/∂x exactly (d backward passes per
evaluation of the field); above it, Hutchinson's estimate (one pass)."""

HUTCHINSON_ESTIMATE = "unbiased estimate (Hutchinson)"
""":attr:`FlowMatching.likelihood_kind` when the trace is estimated: E[log p̂] = log p."""

TRACES: dict[str, str] = {
    "auto": f"exact for d ≤ {EXACT_TRACE_MAX_DIM}, else Hutchinson's estimate",
    "exact": "tr ∂v/∂x from d backward passes per evaluation",
    "hutchinson": "εᵀ(∂v/∂x)ε with Rademacher ε: unbiased, one backward pass",
}

RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {"hidden": [128, 128, 128], "coupling": "independent", "frequencies": 4,
              "reference": 256},
    "train": {"epochs": 360, "batch_size": 512, "lr": 8e-3, "lr_schedule": "cosine"},
}  # fmt: skip
"""The benchmarked setting on points (ring8 and grid25, ``benchmarks/fidelity.py``; BENCHMARKS.md,
"Flow matching", has what else was tried)."""

RECOMMENDED_IMAGES: dict[str, dict[str, Any]] = {
    "model": {"hidden": [1024, 1024, 1024], "frequencies": 0, "reference": 0},
    "train": {"epochs": 12, "batch_size": 128, "lr": 1e-3, "lr_schedule": "cosine"},
}
"""The setting on images (``benchmarks/flow_mnist.py``; BENCHMARKS.md, "Flow matching", MNIST): an
MLP field on the 784 logits; neither Fourier features (12 more inputs per pixel) nor the stable
target (whose posterior in 784 dimensions is the row itself) would do anything but cost."""


@dataclass
class FlowMatchingConfig(ModelConfig):
    """The settings of flow matching: those of ``pushforward fit fm``, and the data's dimension
    and image shape (derived: :meth:`build` fills them in). Left unset, the settings that depend
    on the kind of data take :data:`RECOMMENDED` on points and :data:`RECOMMENDED_IMAGES` on
    images (:meth:`filled`).

    Args:
        net: the field's network: ``mlp`` (:class:`~pushforward.models.fm.VelocityField`) or
            ``unet`` (:class:`~pushforward.models.fm.UNetField`, square images only).
        hidden: the widths of the field's MLP, or the U-Net's channels per level.
        activation: its activation (:data:`pushforward.nets.ACTIVATIONS`).
        coupling: ``independent`` or ``ot`` (:data:`~pushforward.models.fm.COUPLINGS`).
        sigma: the conditional path's width σ ≥ 0, in standardised units.
        frequencies: F, the octaves 2ᵏ, k < F, of the Fourier features of the field's input.
        features: their directions (:data:`~pushforward.models.fm.features.FEATURES`):
            ``even`` (evenly spread, the axes among them), ``isotropic`` (fixed random
            directions) or ``axes`` (per coordinate, as runs stored before this setting were
            built).
        reference: rows of each stable target's reference set
            (:func:`~pushforward.models.fm.stable_target`); 0 or 1: the conditional target
            x₁ − (1 − σ)x₀.
        solver: the ODE solver (:data:`~pushforward.models.fm.SOLVERS`): ``dopri5`` (adaptive)
            or a fixed-step one; ``steps`` equal steps for a fixed-step solver, ``rtol``,
            ``atol`` the adaptive solver's tolerances, ``max_nfe`` the most evaluations of the
            field one solve may take.
        trace: ``auto``, ``exact`` or ``hutchinson`` (:data:`TRACES`), for the likelihood of
            ``log_likelihood_rows`` and ``evaluate``; ``log_prob`` is always exact.
        dim: data dimension d (derived).
        image_shape: (h, w) of image data, which are then dequantised (derived).
    """

    net: str = setting(
        "mlp", "the field: mlp, or unet (square images)", choices=FIELD_NETS, what="field network"
    )
    hidden: list[int] | None = setting(
        None, "widths of the field's MLP (default 128,128,128 on points, 1024,1024,1024 on "
        "images), or the U-Net's channels per level (default "
        + ",".join(map(str, UNET_CHANNELS)) + ")", minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    activation: str = setting("silu", "the field's activation", choices=ACTIVATIONS,
                              what="activation")  # fmt: skip
    coupling: str = setting(
        RECOMMENDED["model"]["coupling"], "pairing of x₀ with x₁: independent or ot",
        choices=COUPLINGS, what="coupling",
    )  # fmt: skip
    sigma: float = setting(
        0.0, "σ, the conditional path's width at t = 1 (standardised units)", minimum=0, below=1
    )
    frequencies: int | None = setting(
        None, "octaves 2ᵏ, k < F, of the Fourier features of the field's input (default 4 on "
        "points, 0 on images)", minimum=0, maximum=MAX_FREQUENCIES,
    )  # fmt: skip
    features: str = setting(
        "even", "directions of the Fourier features: even (evenly spread, the axes among them), "
        "isotropic (fixed random directions) or axes (sin/cos(2ᵏxᵢ) per coordinate)",
        choices=FEATURES, what="Fourier features",
    )  # fmt: skip
    reference: int | None = setting(
        None, "rows of the stable target's reference set (0 = the conditional target x₁ − x₀; "
        "default 256 on points, 0 on images)", minimum=0, maximum=MAX_REFERENCE,
    )  # fmt: skip
    solver: str = setting(
        "dopri5", "ODE solver: dopri5 (adaptive), rk4, midpoint, euler (fixed steps)",
        choices=SOLVERS, what="ODE solver", sampling=True,
    )  # fmt: skip
    steps: int = setting(
        100, "steps of a fixed-step solver", minimum=1, maximum=1_000_000, sampling=True
    )
    rtol: float = setting(1e-5, "the adaptive solver's relative tolerance", above=0, below=1,
                          sampling=True)  # fmt: skip
    atol: float = setting(1e-5, "the adaptive solver's absolute tolerance", above=0, below=1,
                          sampling=True)  # fmt: skip
    max_nfe: int = setting(
        10_000, "the most field evaluations one ODE solve may take", minimum=1,
        maximum=10_000_000, sampling=True,
    )  # fmt: skip
    trace: str = setting("auto", "the likelihood's trace: auto, exact or hutchinson",
                         choices=TRACES, what="trace")  # fmt: skip
    dim: int | None = setting(
        None, "the data's dimension d", minimum=1, maximum=MAX_LATENT, derived=True
    )
    image_shape: tuple[int, int] | None = setting(
        None, "(h, w) of image data", minimum=1, derived=True
    )

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """A run stored before these settings existed was built with an MLP and neither lever;
        one stored before ``features`` with features along the axes."""
        return {"net": "mlp", "frequencies": 0, "features": "axes", "reference": 0}

    def check(self) -> None:
        if self.dim is not None and self.image_shape is not None:
            if self.image_shape[0] * self.image_shape[1] != self.dim:
                raise ConfigError(
                    f"image_shape {self.image_shape} does not hold dim = {self.dim} values"
                )
        if self.net == "unet" and self.frequencies:
            raise ConfigError(
                f"frequencies = {self.frequencies} is an input of the MLP field; use frequencies "
                "= 0 with net = unet"
            )
        if self.coupling == "ot" and self.reference is not None and self.reference > 1:
            raise ConfigError(
                f"reference = {self.reference} needs coupling = independent: the stable target "
                "is the posterior of x₁ under independent pairs; use reference = 0 with the OT "
                "coupling"
            )

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the field's widths, Fourier features and stable target's reference size for
        data of ``kind`` (no stable target with the OT coupling, see :meth:`check`)."""
        rec = RECOMMENDED_IMAGES["model"] if kind == "images" else RECOMMENDED["model"]
        out = {k: rec[k] for k in ("hidden", "frequencies", "reference")}
        if self.net == "unet":
            out = {**out, "hidden": list(UNET_CHANNELS), "frequencies": 0}
        return {**out, "reference": 0} if self.coupling == "ot" else out

    def filled(self) -> FlowMatchingConfig:
        """Return a copy with the settings left None filled in for the kind of data (images when
        ``image_shape`` is set, see :meth:`kind_defaults`); ``dim`` must be set."""
        if self.dim is None:
            raise ConfigError("dim must be set: the data's dimension (build fills it in)")
        return self.resolve("points" if self.image_shape is None else "images")

    @property
    def solver_settings(self) -> Solver:
        """The ODE solver these settings describe."""
        return Solver(self.solver, self.steps, self.rtol, self.atol, self.max_nfe)

    def build(self, ds: Dataset) -> FlowMatching:
        """Return a FlowMatching model for the data set ``ds`` (dequantised for images)."""
        from pushforward.models.fm.model import FlowMatching  # the model module imports this one

        return FlowMatching(dataclasses.replace(self, dim=ds.dim, image_shape=ds.image_shape))
