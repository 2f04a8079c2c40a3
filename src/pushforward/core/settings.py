"""Settings: dataclass fields that carry their help, bounds and choices, validated in one place."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pushforward.core.errors import ConfigError
from pushforward.core.model import Model

__all__ = [
    "DATA_KINDS",
    "ModelConfig",
    "ModelSpec",
    "Settings",
    "check_setting",
    "setting",
    "setting_types",
    "user_settings",
]

DATA_KINDS: dict[str, str] = {
    "points": "rows of real numbers (the 2-D mixtures, moons, user arrays)",
    "images": "rows that are square grey images in [0, 1] (8×8 digits, MNIST)",
}
"""The kinds of data a model's defaults may depend on (:meth:`ModelConfig.kind_defaults`,
:meth:`ModelSpec.train_defaults_for`)."""


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
    derived: bool = False,
) -> Any:
    """Return a dataclass field for a user-facing setting, with its help and allowed values.

    ``minimum``/``maximum`` bound a number inclusively, ``above``/``below`` exclusively (list
    items too); ``choices`` is the registry a name must be found in (``what`` names its kind in
    messages); ``sampling`` marks a setting that may also be changed when sampling a fitted model;
    ``derived`` marks one that is filled from the data when the model is built (its dimension,
    its image shape), stored in the model's config but never a command-line flag.
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
        "derived": derived,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def user_settings(cls: type) -> list[str]:
    """Return the names of the fields of the settings dataclass ``cls`` a user chooses: every
    field but the ``derived`` ones (filled from the data when the model is built)."""
    return [f.name for f in fields(cls) if not f.metadata.get("derived")]


@functools.cache
def setting_types(cls: type) -> Mapping[str, Any]:
    """Return the resolved type annotation of each field of the dataclass ``cls``, read-only.

    Resolved once per class: ``typing.get_type_hints`` evaluates every annotation string anew at
    each call (about 1 ms for a model's settings), and every settings object made checks its
    fields against them."""
    return types.MappingProxyType(typing.get_type_hints(cls))


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
    def from_stored(cls, stored: Mapping[str, Any]) -> Any:
        """Return the config a stored run's ``model.config`` describes (what :meth:`to_dict`
        wrote, or what an earlier release's ``get_config`` wrote: subclasses translate those);
        :meth:`from_dict` of :meth:`read_stored` by default."""
        return cls.from_dict(cls.read_stored(stored))

    @classmethod
    def read_stored(
        cls, stored: Mapping[str, Any], present: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Return stored settings as this release reads them: those a run lacks because it was
        written before they existed (keys not in ``present``, default ``stored``'s own) filled
        in from :meth:`stored_defaults`, then :meth:`upgrade_stored`. Every reader of a stored
        run, its ``model.config`` and its run settings alike, goes through here."""
        have = set(stored if present is None else present)
        older = {k: v for k, v in cls.stored_defaults().items() if k not in have}
        return cls.upgrade_stored({**older, **stored})

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """Return the values of settings that a stored run lacks because it was written before
        they existed (what it was built with), filled in when its config.json is read back;
        none by default."""
        return {}

    @classmethod
    def upgrade_stored(cls, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Return a stored run's settings (after :meth:`stored_defaults` filled in those it
        lacks; :meth:`read_stored`) as this release reads them: unchanged by default; a config
        class where a stored value's meaning changed (None once meaning another default)
        overrides this, so that its old runs load and resume as they were built."""
        return dict(stored)

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
