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

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from pushforward.errors import CheckpointError, ConfigError, NoDensityError

__all__ = [
    "DATA_KINDS",
    "EXACT_LIKELIHOOD",
    "LOWER_BOUND",
    "Model",
    "ModelConfig",
    "ModelSpec",
    "Settings",
    "check_setting",
    "setting",
    "setting_types",
]


EXACT_LIKELIHOOD = "exact"
""":attr:`Model.likelihood_kind` of a model whose :meth:`Model.log_likelihood_rows` is exact."""

LOWER_BOUND = "lower bound"
""":attr:`Model.likelihood_kind` of a model whose :meth:`Model.log_likelihood_rows` bounds log q
from below (the VAE's IWAE estimate: it rises to log q as the number of importance samples
grows)."""


DATA_KINDS: dict[str, str] = {
    "points": "rows of real numbers (the 2-D mixtures, moons, user arrays)",
    "images": "rows that are square grey images in [0, 1] (8×8 digits, MNIST)",
}
"""The kinds of data a model's defaults may depend on (:meth:`ModelConfig.kind_defaults`,
:meth:`ModelSpec.train_defaults_for`)."""


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
    history_plot: ClassVar[str] = "loss"
    """How to draw the training history: a key of :data:`pushforward.plots.HISTORY_PLOTS`."""

    dim: int
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
        raise ConfigError(f"a {type(self).__name__} is not generative: it cannot sample")

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
        raise ConfigError(f"a {type(self).__name__} has no encoder")

    def motion(self, n: int, times: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return particles x_t (T, n, d): n draws of μ (at t = 0) carried to g#μ (at t = 1),
        at each of the T increasing ``times`` in [0, 1]."""
        raise ConfigError(
            f"a {type(self).__name__} has no motion in time: it maps μ to g#μ in one step"
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """Return the exact log-density (n,) in nats of g#μ at each row of x (n, d)."""
        raise NoDensityError(f"a {type(self).__name__} has no exact density")

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
            raise NoDensityError(f"a {type(self).__name__} has no likelihood")
        return self.log_prob(x)

    def set_sampling(self, **options: Any) -> None:
        """Change how samples are drawn, by the names in :attr:`sampling_options`."""
        for name, value in options.items():
            if name not in self.sampling_options:
                allowed = ", ".join(self.sampling_options) or "none"
                raise ConfigError(
                    f"{name} is not a sampling setting of a {type(self).__name__} "
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
            lp = self.log_prob(x).double()
            mean = float(lp.mean())
            stderr = float(lp.std() / math.sqrt(lp.numel())) if lp.numel() > 1 else 0.0
            out.update(
                log_likelihood=mean,
                log_likelihood_stderr=stderr,
                nll=-mean,
                bits_per_dim=-mean / (x.shape[1] * math.log(2)),
                exact=True,
            )
        return out

    # --- saving ---------------------------------------------------------------------------------

    def eval(self) -> Any:
        """Switch to inference (a no-op for models without training-time behaviour)."""
        return self

    def get_config(self) -> dict[str, Any]:
        """Return the JSON-able constructor arguments: ``from_config(get_config())`` rebuilds it."""
        raise NotImplementedError(f"{type(self).__name__} must define get_config")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """Return an unfitted model built from :meth:`get_config`'s output."""
        try:
            return cls(**config)
        except TypeError as e:
            raise CheckpointError(
                f"config {dict(config)!r} does not describe a {cls.__name__}: {e}"
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


# --- settings -------------------------------------------------------------------------------------


def setting(
    default: Any = None,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    choices: Mapping[str, Any] | None = None,
    what: str | None = None,
    sampling: bool = False,
) -> Any:
    """Return a dataclass field for a user-facing setting, with its help and allowed values.

    ``minimum``/``maximum`` bound a number inclusively, ``above``/``below`` exclusively (list
    items too); ``choices`` is the registry a name must be found in (``what`` names its kind in
    messages); ``sampling`` marks a setting that may also be changed when sampling a fitted model.
    """
    meta = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
        "choices": choices,
        "what": what,
        "sampling": sampling,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def setting_types(cls: type) -> dict[str, Any]:
    """Return the resolved type annotation of each field of the dataclass ``cls``."""
    return typing.get_type_hints(cls)


def _allowed(meta: Mapping[str, Any], kind: str) -> str:
    parts = []
    if meta.get("minimum") is not None:
        parts.append(f"≥ {meta['minimum']:g}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']:g}")
    if meta.get("maximum") is not None:
        parts.append(f"≤ {meta['maximum']:,g}")
    if meta.get("below") is not None:
        parts.append(f"< {meta['below']:g}")
    return f"{kind} {' and '.join(parts)}".strip()


def _in_bounds(value: float, meta: Mapping[str, Any]) -> bool:
    lo, hi, above, below = (meta.get(k) for k in ("minimum", "maximum", "above", "below"))
    return (
        (lo is None or value >= lo)
        and (hi is None or value <= hi)
        and (above is None or value > above)
        and (below is None or value < below)
    )


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def check_setting(name: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """Return ``value`` checked (and coerced, lists and tuples) against the type ``tp`` and the
    bounds in ``meta``, or raise ConfigError naming the setting, the value and what is allowed."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be set; use {_allowed(meta, _kind(tp))}")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{name} = {value!r} is not allowed; use a list of {_kind(item)}")
        args = typing.get_args(tp)
        n = len(args) if origin is tuple and Ellipsis not in args else 0
        try:
            items = [check_setting(name, v, item, meta) for v in value]
        except ConfigError:
            items = []
        if not items or (n and len(items) != n):
            count = str(n) if n else "a list of"
            raise ConfigError(
                f"{name} = {list(value)!r} is not allowed; use {count} "
                f"{_allowed(meta, _kind(item, plural=True))}"
            )
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} = {value!r} is not allowed; use true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or not _in_bounds(value, meta):
            raise ConfigError(
                f"{name} = {value!r} is not allowed; use {_allowed(meta, 'an integer')}"
            )
        return value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not _in_bounds(value, meta):
            raise ConfigError(
                f"{name} = {value!r} is not allowed; use {_allowed(meta, 'a finite number')}"
            )
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r} is not allowed; use a name")
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            known = ", ".join(sorted(choices))
            raise ConfigError(f"unknown {meta.get('what') or name} {value!r}; known: {known}")
        return value
    raise TypeError(f"setting {name} has a type settings do not support: {tp!r}")


def _kind(tp: Any, *, plural: bool = False) -> str:
    if plural:
        return {int: "integers", float: "finite numbers", str: "names"}.get(tp, str(tp))
    return {int: "an integer", float: "a finite number", str: "a name", bool: "true or false"}.get(
        tp, str(tp)
    )


@dataclass
class Settings:
    """Base of a dataclass of user-facing settings: every field is checked against its type and
    its :func:`setting` metadata when the object is made; subclasses add cross-field checks in
    :meth:`check`."""

    def __post_init__(self) -> None:
        types_ = setting_types(type(self))
        for f in fields(self):
            value = check_setting(f.name, getattr(self, f.name), types_[f.name], f.metadata)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Refuse combinations of settings that cannot work together; nothing by default."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Build from a mapping, refusing unknown keys with the list of known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; known: {', '.join(known)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-able dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass
class ModelConfig(Settings):
    """Base of the per-model settings; subclasses say how to build the model from data in
    :meth:`build`.

    A setting whose default is None may be filled by the kind of data (one of
    :data:`DATA_KINDS`): :meth:`kind_defaults` gives the values, :meth:`resolve` fills them in, so
    that a run's ``config.json`` records the values actually used.
    """

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """Return the values of settings that a stored run lacks because it was written before
        they existed (what it was built with), filled in when its config.json is read back;
        none by default."""
        return {}

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the values of settings left None that suit data of ``kind``; none by default."""
        return {}

    def resolve(self, kind: str) -> Any:
        """Return a copy with every setting left None that :meth:`kind_defaults` names filled in
        for data of ``kind`` (settings given by the user are kept)."""
        if kind not in DATA_KINDS:
            raise ConfigError(f"unknown data kind {kind!r}; known: {', '.join(DATA_KINDS)}")
        fill = {
            k: v for k, v in self.kind_defaults(kind).items()
            if getattr(self, k) is None and v is not None
        }  # fmt: skip
        return dataclasses.replace(self, **fill) if fill else self

    def build(self, ds: Any) -> Model:
        """Return a fresh model for the data set ``ds`` (a :class:`~pushforward.datasets.Dataset`),
        its weights drawn from the global generator (the caller seeds it)."""
        raise NotImplementedError(f"{type(self).__name__} must define build")


@dataclass(frozen=True)
class ModelSpec:
    """A model family in the registry: its class, its settings, and the training settings it was
    benchmarked with (``train_defaults``: fields of :class:`~pushforward.train.TrainConfig`;
    ``kind_train_defaults`` overrides them for a kind of data, e.g. ``{"images": {...}}``)."""

    cls: type
    config: type[ModelConfig]
    summary: str
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    kind_train_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def train_defaults_for(self, kind: str) -> dict[str, Any]:
        """Return the benchmarked training settings for data of ``kind`` (one of
        :data:`DATA_KINDS`)."""
        if kind not in DATA_KINDS:
            raise ConfigError(f"unknown data kind {kind!r}; known: {', '.join(DATA_KINDS)}")
        return {**self.train_defaults, **self.kind_train_defaults.get(kind, {})}

    @property
    def trained(self) -> bool:
        """Whether the model is trained by gradient descent (else fitted in closed form)."""
        return bool(self.cls.trained)
