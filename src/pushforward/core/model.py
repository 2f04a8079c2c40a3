"""The one contract every pushforward model meets, and the settings that describe how to build one.

A model is a pushforward g#μ with whatever else it can do *declared* as class attributes, so that
generic code (run folders, the command line, the report) reads declarations and never asks what
kind of model it holds:

===================== ===========================================================================
``generative``        :meth:`Model.sample` draws exactly n rows of g#μ
``has_encoder``       :meth:`Model.encode` maps data x (n, d) to codes z (n, k)
``has_exact_density`` :meth:`Model.log_prob` is the exact log-density of g#μ (nats)
``likelihood_kind``   what :meth:`Model.log_likelihood_rows` returns: ``"exact"``, ``"lower
                      bound"`` (the VAE's importance-weighted estimate) or ``None`` (no density)
``trained``           fitted by gradient descent in :func:`pushforward.train.fit`; otherwise in
                      closed form by ``model.fit(x)``
``has_motion``        :meth:`Model.motion` carries draws of μ to g#μ continuously in a time
                      t ∈ [0, 1] (flow matching's ODE): particles at chosen times
``has_decoder``       :meth:`Model.decode` maps codes z (n, k) to points g(z) (n, d); a model
                      may also write its decoder as a portable program
                      (:meth:`Model.decoder_layers`) that code outside PyTorch can run
===================== ===========================================================================

Every model has ``dim`` (d) and ``latent`` (k), :meth:`~Model.decode` (z ↦ g(z)),
:meth:`~Model.evaluate` (its own measures on data), and round-trips through
:meth:`~Model.get_config` (JSON) plus :meth:`~Model.get_state` (tensors, for safetensors).

Each model family also has a :class:`ModelConfig` dataclass: the settings a user chooses when
fitting it. Its fields carry their help text, allowed values and bounds in their metadata (made
with :func:`setting`); validation is generic, in :meth:`ModelConfig.__post_init__`, and the
command line generates its ``fit`` flags from the same fields. A :class:`ModelSpec` ties a name to
the model class, its config class and the training defaults it was benchmarked with; the registry
of specs is :data:`pushforward.registry.MODELS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.core.errors import CheckpointError, ConfigError, NoDensityError, a_or_an
from pushforward.core.results import likelihood_summary

__all__ = [
    "EVAL_BATCH",
    "EXACT_LIKELIHOOD",
    "LOWER_BOUND",
    "Model",
]


EVAL_BATCH = 4096
"""Rows per forward pass (or per ODE solve) when a model scores or maps many rows at once."""

EXACT_LIKELIHOOD = "exact"
""":attr:`Model.likelihood_kind` of a model whose :meth:`Model.log_likelihood_rows` is exact."""

LOWER_BOUND = "lower bound"
""":attr:`Model.likelihood_kind` of a model whose :meth:`Model.log_likelihood_rows` bounds log q
from below (the VAE's IWAE estimate: it rises to log q as the number of importance samples
grows)."""


class Model:
    """What every model offers; capabilities are declared, never probed.

    Subclasses set the capability flags they have and define the methods those flags promise.
    The defaults of the optional methods raise a :class:`~pushforward.errors.ConfigError` (or
    :class:`~pushforward.errors.NoDensityError`) that names the model and what it lacks.
    """

    generative: ClassVar[bool] = True
    has_encoder: ClassVar[bool] = False
    has_exact_density: ClassVar[bool] = False
    trained: ClassVar[bool] = True
    has_motion: ClassVar[bool] = False
    has_decoder: ClassVar[bool] = True
    sampling_options: ClassVar[tuple[str, ...]] = ()
    """Names of settings that may be changed after fitting to change how samples are drawn."""
    code_label: ClassVar[str] = "latent codes f(x)"
    """What :meth:`encode` returns, for figure titles."""
    evaluate_keys: ClassVar[Mapping[str, Any]] = {}
    """How the keys of :meth:`evaluate` that only this model gives read (name →
    :class:`~pushforward.core.results.ResultKey`); the keys every encoder or likelihood gives
    are in :mod:`pushforward.core.results`."""
    history_plot: ClassVar[str] = "loss"
    """How to draw the training history: a key of :data:`pushforward.plots.HISTORY_PLOTS`."""

    dim: int
    config: Any
    latent: int

    # --- the pushforward ------------------------------------------------------------------------

    @property
    def latent_measure(self) -> Any:
        """The base measure μ of g#μ (a :class:`~pushforward.measures.BaseMeasure`), or None."""
        return None

    @property
    def sample_label(self) -> str:
        """What :meth:`sample` draws, for figure titles."""
        return "samples of g#μ"

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws (n, d) of g#μ."""
        raise ConfigError(f"{a_or_an(type(self).__name__)} is not generative: it cannot sample")

    def decode(self, z: Tensor) -> Tensor:
        """Return g(z), shape (n, d), for codes z (n, k)."""
        raise NotImplementedError(f"{type(self).__name__} must define decode")

    def decoder_layers(self) -> list[tuple] | None:
        """Return :meth:`decode` as a portable program, a list of steps that maps z (n, k) to
        g(z) (n, d) (see :data:`pushforward.nets.DecoderLayer`: linear maps, elementwise
        activations, elementwise affine maps), or None when the decoder is not such a chain
        (convolutions, flows): then only :meth:`decode` itself evaluates it."""
        return None

    def encode(self, x: Tensor) -> Tensor:
        """Return the codes (n, k) of data x (n, d)."""
        raise ConfigError(f"{a_or_an(type(self).__name__)} has no encoder")

    def motion(self, n: int, times: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return particles x_t (T, n, d): n draws of μ (at t = 0) carried to g#μ (at t = 1),
        at each of the T increasing ``times`` in [0, 1]."""
        raise ConfigError(
            f"{a_or_an(type(self).__name__)} has no motion in time: it maps μ to g#μ in one step"
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """Return the exact log-density (n,) in nats of g#μ at each row of x (n, d)."""
        raise NoDensityError(f"{a_or_an(type(self).__name__)} has no exact density")

    @property
    def likelihood_kind(self) -> str | None:
        """What :meth:`log_likelihood_rows` gives: :data:`EXACT_LIKELIHOOD` for a model with an
        exact density, :data:`LOWER_BOUND` for one that only bounds it, None when it has none."""
        return EXACT_LIKELIHOOD if self.has_exact_density else None

    def log_likelihood_rows(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> Tensor:
        """Return log q(x) (n,) in nats for each row of x (n, d), as :attr:`likelihood_kind` says:
        exact (:meth:`log_prob`), or a lower bound from ``iwae_k`` importance samples drawn from
        ``generator``."""
        if not self.has_exact_density:
            raise NoDensityError(f"{a_or_an(type(self).__name__)} has no likelihood")
        return self.log_prob(x)

    def set_sampling(self, **options: Any) -> None:
        """Change how samples are drawn, by the names in :attr:`sampling_options`."""
        for name, value in options.items():
            if name not in self.sampling_options:
                allowed = ", ".join(self.sampling_options) or "none"
                raise ConfigError(
                    f"{name} is not a sampling setting of {a_or_an(type(self).__name__)} "
                    f"(its sampling settings: {allowed})"
                )
            setattr(self, name, value)

    def sampling_cost(self) -> dict[str, Any]:
        """Return what the last :meth:`sample` cost beyond one pass of g, by name (flow
        matching: ``nfe``, the field evaluations of its ODE solve); empty by default."""
        return {}

    def sampling_settings(self) -> dict[str, Any]:
        """Return the current values of :attr:`sampling_options`."""
        return {name: getattr(self, name) for name in self.sampling_options}

    # --- measures -------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> dict[str, Any]:
        """Return the model's own measures on data x (n, d), by name (see
        :data:`pushforward.runs.RESULT_KEYS`): the squared reconstruction error per example for a
        model with an encoder, and the exact mean log-likelihood for one with an exact density.
        ``iwae_k`` is the number of importance samples where the likelihood is estimated."""
        out: dict[str, Any] = {}
        if self.has_encoder:
            recon = self.decode(self.encode(x)).to(x.dtype)
            out["squared_error"] = float((recon - x).pow(2).sum(1).mean())
        if self.has_exact_density:
            out.update(likelihood_summary(self.log_prob(x), dim=x.shape[1], exact=True))
        return out

    # --- saving ---------------------------------------------------------------------------------

    def eval(self) -> Any:
        """Switch to inference (a no-op for models without training-time behaviour)."""
        return self

    config_class: ClassVar[type | None] = None
    """The model's :class:`~pushforward.core.settings.ModelConfig`: a model that names one is
    built as ``Model(config)`` and keeps it as ``self.config``; :meth:`get_config` is then the
    config's own dict and :meth:`from_config` reads it back."""

    def get_config(self) -> dict[str, Any]:
        """Return the JSON-able config: ``from_config(get_config())`` rebuilds the model."""
        if self.config_class is not None:
            return self.config.to_dict()
        raise NotImplementedError(f"{type(self).__name__} must define get_config")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """Return an unfitted model built from :meth:`get_config`'s output (or a stored run's,
        which the config class translates: :meth:`ModelConfig.from_stored`)."""
        try:
            if cls.config_class is not None:
                return cls(cls.config_class.from_stored(config))
            return cls(**config)
        except TypeError as e:
            raise CheckpointError(
                f"config {dict(config)!r} does not describe {a_or_an(cls.__name__)}: {e}"
            ) from None

    @classmethod
    def state_shapes(
        cls, config: Mapping[str, Any], data_shape: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        """Return the shape of every tensor of :meth:`get_state` for a model of ``config``
        fitted to data of ``data_shape`` (n, d), without allocating any tensor."""
        raise NotImplementedError(f"{cls.__name__} must define state_shapes")

    def get_state(self) -> dict[str, Tensor]:
        """Return the learned state as named tensors."""
        raise NotImplementedError(f"{type(self).__name__} must define get_state")

    def load_state(self, state: Mapping[str, Tensor], *, source: str = "state") -> None:
        """Set the learned state from :meth:`get_state`'s tensors, refusing any that do not fit;
        ``source`` names where they came from in messages."""
        raise NotImplementedError(f"{type(self).__name__} must define load_state")
