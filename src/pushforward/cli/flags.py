"""The flags generated from settings: one per setting of the training loop and of each model.

Settings of one name share one flag (``--hidden`` sets the hidden widths of every model that has
them) as long as their owners agree on its type. An owner that gives a name another type than the
first owner does (training first, then the models in registry order) gets its own flag,
``--MODEL.NAME``; so a new model never renames a flag that is already there. The values given are
routed to the settings of the model being fitted (:func:`given_settings`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pushforward.core import ConfigError, setting_types

__all__ = [
    "SettingFlag",
    "add_sampling_flags",
    "add_setting_flags",
    "given_settings",
    "setting_flags",
]

TRAINING = "training"
"""The owner name of the training loop's settings."""


def _int_text(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _items(convert: Any, what: str) -> Any:
    """Return a parser of comma-separated values, each read by ``convert``."""

    def parse(text: str) -> list:
        try:
            return [convert(t) for t in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} separated by commas, got {text!r}"
            ) from None

    return parse


_int_items = _items(int, "integers")
_float_items = _items(float, "numbers")


def _float_pair(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers such as 0.5,0.999")
    return values


# how a setting's type is read from the command line; bounds are the settings' own checks
_PARSERS: dict[Any, Any] = {int: _int_text, float: _float_text, str: str}


def flag_type(tp: Any) -> Any:
    """Return the argparse ``type`` for a setting of type ``tp`` (Optional unwrapped)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = args[0]
        args = list(typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is list:
        return _float_items if typing.get_args(tp) == (float,) else _int_items
    if origin is tuple:
        return _float_pair
    return _PARSERS.get(tp, tp)


@dataclasses.dataclass(frozen=True)
class SettingFlag:
    """One generated flag: the setting ``name`` of each of ``owners`` (``training`` or model
    names), of type ``tp``, with each owner's help text and default in ``helps``. A ``scoped``
    flag is one model's own, ``--MODEL.NAME``; ``sampling`` marks a setting that also changes
    how a fitted model samples."""

    name: str
    tp: Any
    helps: Mapping[str, tuple[str, Any]]
    sampling: bool = False
    scoped: bool = False
    others: tuple[str, ...] = ()  # the scoped flags of the same name, named in the help

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(self.helps)

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments that holds the value."""
        return f"{self.owners[0]}.{self.name}" if self.scoped else self.name

    @property
    def option(self) -> str:
        """The flag as the user types it: ``--NAME`` or ``--MODEL.NAME``."""
        scope = f"{self.owners[0]}." if self.scoped else ""
        return f"--{scope}{self.name.replace('_', '-')}"

    def help(self) -> str:
        """One help text: owners with the same text together, each group with its default(s),
        then the models whose setting of this name has its own flag."""
        text = _help(self.helps)
        if self.others:
            text += "; " + ", ".join(
                f"{o}: see --{o}.{self.name.replace('_', '-')}" for o in self.others
            )
        return text.replace("%", "%%")


def _owners(models: Mapping[str, Any]) -> list[tuple[str, type]]:
    from pushforward.train import TrainConfig

    return [(TRAINING, TrainConfig), *((name, spec.config) for name, spec in models.items())]


def _entries(models: Mapping[str, Any]) -> dict[str, list[tuple[str, Any, str, Any, bool]]]:
    """Every setting that is a flag, by name: (owner, type, help text, default, sampling)."""
    out: dict[str, list[tuple[str, Any, str, Any, bool]]] = {}
    for owner, cls in _owners(models):
        types_ = setting_types(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("derived"):  # filled from the data, not a flag
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            text = f.metadata.get("help", "")
            if owner == TRAINING:  # the models whose benchmarked training defaults differ
                own = [_train_default(m, s, f.name) for m, s in models.items()
                       if f.name in s.train_defaults]  # fmt: skip
                text += f" (default {_shown(default)}; {', '.join(own)})" if own else ""
                default = None if own else default
            sampling = bool(f.metadata.get("sampling"))
            out.setdefault(f.name, []).append((owner, types_[f.name], text, default, sampling))
    return out


def setting_flags(models: Mapping[str, Any] | None = None) -> list[SettingFlag]:
    """Return the flags of ``fit``: one per setting name whose owners agree on its type (that of
    its first owner), and one ``--MODEL.NAME`` per model that gives the name another type."""
    if models is None:
        from pushforward.models.registry import MODELS as models
    flags = []
    for name, entries in _entries(models).items():
        first = flag_type(entries[0][1])
        shared = [e for e in entries if flag_type(e[1]) is first]
        own = [e for e in entries if flag_type(e[1]) is not first]
        flags.append(_flag(name, shared, others=tuple(e[0] for e in own)))
        flags += [_flag(name, [e], scoped=True) for e in own]
    return flags


def _flag(name: str, entries: list, *, scoped: bool = False, others: tuple = ()) -> SettingFlag:
    helps = {owner: (text, default) for owner, _, text, default, _ in entries}
    sampling = any(e[4] for e in entries)
    return SettingFlag(name, entries[0][1], helps, sampling, scoped, others)


def _train_default(model: str, spec: Any, name: str) -> str:
    """``MODEL VALUE``, with the values for other kinds of data in brackets where they differ."""
    value = spec.train_defaults[name]
    others = [f"{kind} {_shown(d[name])}" for kind, d in spec.kind_train_defaults.items()
              if d.get(name, value) != value]  # fmt: skip
    return f"{model} {_shown(value)}" + (f" ({', '.join(others)})" if others else "")


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _help(helps: Mapping[str, tuple[str, Any]]) -> str:
    by_text: dict[str, dict[str, Any]] = {}
    for owner, (text, default) in helps.items():
        by_text.setdefault(text, {})[owner] = default
    parts = []
    for text, defaults in by_text.items():
        values = {_shown(v) for v in defaults.values() if v is not None}
        if not values:
            shown = ""
        elif len(values) == 1 and None not in defaults.values():
            shown = f" (default {values.pop()})"
        else:
            shown = (
                " (defaults "
                + ", ".join(f"{o} {_shown(v)}" for o, v in defaults.items() if v is not None)
                + ")"
            )
        parts.append(f"{', '.join(defaults)}: {text}{shown}")
    return "; ".join(parts)


def _add(parser: Any, flag: SettingFlag, suffix: str = "") -> None:
    if flag.tp is bool:
        parser.add_argument(flag.option, dest=flag.dest, action=argparse.BooleanOptionalAction,
                            default=None, help=flag.help() + suffix)  # fmt: skip
    else:
        parser.add_argument(flag.option, dest=flag.dest, type=flag_type(flag.tp), default=None,
                            help=flag.help() + suffix)  # fmt: skip


def add_setting_flags(parser: argparse.ArgumentParser, flags: Iterable[SettingFlag]) -> None:
    """Add one flag per setting of the training loop and of every registered model."""
    group = parser.add_argument_group("settings (the models or the training loop each is for)")
    for flag in flags:
        _add(group, flag)


def add_sampling_flags(parser: argparse.ArgumentParser, flags: Iterable[SettingFlag]) -> None:
    """Add the settings that change how a fitted model samples (a GAN's Jacobian truncation)."""
    for flag in flags:
        if flag.sampling:
            _add(parser, flag, " (default: the run's own)")


def given_settings(
    args: argparse.Namespace, flags: Iterable[SettingFlag], model: str | None, *,
    sampling: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Return the settings given on the command line for a ``model`` run, by setting name.

    A ``--MODEL.NAME`` flag of another model, or the shared ``--NAME`` where the model has its
    own ``--MODEL.NAME``, is refused; with ``sampling``, only the sampling flags are read."""
    flags = [f for f in flags if f.sampling or not sampling]
    scoped = {(f.owners[0], f.name): f for f in flags if f.scoped}
    out: dict[str, Any] = {}
    for flag in flags:
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        if model is not None and flag.scoped and flag.owners[0] != model:
            raise ConfigError(f"{flag.option} is a setting of {flag.owners[0]}, not of {model}")
        own = scoped.get((model, flag.name))
        if own is not None and not flag.scoped:
            raise ConfigError(
                f"{flag.option} is for {', '.join(flag.owners)}; {model}'s {flag.name} is "
                f"{own.option}"
            )
        out[flag.name] = value
    return out
