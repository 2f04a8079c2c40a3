"""The settings of a run: the model's name, the data, the model's settings, the training's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pushforward.core import ConfigError, ModelConfig, ModelSpec, a_or_an, lookup, user_settings
from pushforward.data import datasets
from pushforward.models.registry import MODELS
from pushforward.train import TrainConfig

__all__ = ["RUN_KEYS", "RunConfig", "read_settings_file"]

RUN_KEYS = ("model", "data", "n", "rows")
"""The settings of the run itself, beside the model's and the training's."""


@dataclass
class RunConfig:
    """Everything ``pushforward fit`` needs: the model's name, the data, the model's settings
    (its :class:`~pushforward.contract.ModelConfig`, default its benchmarked defaults) and the
    training settings (default the model's ``train_defaults``).

    The model's settings left to the kind of data (images or points, from the data's spec) are
    filled in here (:meth:`~pushforward.contract.ModelConfig.resolve`), so ``config.json``
    records the values the run used."""

    model: str
    data: str
    n: int | None = None
    rows: str | None = None
    settings: ModelConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        spec = self.spec
        if self.settings is None:
            self.settings = spec.config()
        if type(self.settings) is not spec.config:
            raise ConfigError(
                f"the settings of {a_or_an(self.model)} run must be "
                f"{a_or_an(spec.config.__name__)}, got {a_or_an(type(self.settings).__name__)}"
            )
        self.settings = self.settings.resolve(datasets.data_kind(self.data))
        bad = isinstance(self.n, bool) or not isinstance(self.n, int | None)
        if bad or (self.n is not None and self.n < 1):
            raise ConfigError(f"n = {self.n!r} is not allowed; use an integer ≥ 1")

    @property
    def spec(self) -> ModelSpec:
        """The registry entry of the model."""
        return lookup(MODELS, self.model, what="model")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from one flat mapping of run, model and training settings (as in a config
        file); training settings not given take the model's benchmarked defaults."""
        for key in ("model", "data"):
            if key not in values:
                raise ConfigError(f"the setting {key!r} is required")
        spec = lookup(MODELS, values["model"], what="model")
        model_keys = user_settings(spec.config)
        train_keys = [f.name for f in fields(TrainConfig)]
        unknown = sorted(set(values) - set(RUN_KEYS) - set(model_keys) - set(train_keys))
        if unknown:
            name, kind = unknown[0], values["model"]
            others = [m for m, s in MODELS.items() if name in user_settings(s.config)]
            known = ", ".join(model_keys)
            if others:
                raise ConfigError(
                    f"{name} is not a setting of {kind} (it is one of {', '.join(others)}); "
                    f"{kind}'s settings: {known}; training: {', '.join(train_keys)}"
                )
            raise ConfigError(
                f"unknown setting {name!r}; {kind}'s settings: {known}; "
                f"training: {', '.join(train_keys)}"
            )
        defaults = spec.train_defaults_for(datasets.data_kind(values["data"]))
        train = TrainConfig.from_dict(
            {**defaults, **{k: v for k, v in values.items() if k in train_keys}}
        )
        settings = spec.config(**{k: v for k, v in values.items() if k in model_keys})
        run = {k: values[k] for k in RUN_KEYS if k in values}
        return cls(**run, settings=settings, train=train)

    def to_flat(self) -> dict[str, Any]:
        """Return the run, model and training settings as one flat mapping (:meth:`from_flat`)."""
        assert self.settings is not None
        run = {k: getattr(self, k) for k in RUN_KEYS}
        return {**run, **self._user_settings(), **self.train.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as stored in a run folder: run keys, ``settings``, ``train``."""
        assert self.settings is not None
        run = {k: getattr(self, k) for k in RUN_KEYS}
        return {**run, "settings": self._user_settings(), "train": self.train.to_dict()}

    def _user_settings(self) -> dict[str, Any]:
        """The model's settings a user chose (derived ones are the model's to record)."""
        assert self.settings is not None
        own = set(user_settings(type(self.settings)))
        return {k: v for k, v in self.settings.to_dict().items() if k in own}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """Build from :meth:`to_dict`'s output, or from a format-1 run's flat table (whose
        settings of other models, and unset ones, are dropped)."""
        train = d.get("train", {})
        spec = lookup(MODELS, d.get("model"), what="model")
        if "settings" in d:
            run = {k: d[k] for k in RUN_KEYS if k in d}
            return cls.from_flat({**run, **spec.config.read_stored(d["settings"]), **train})
        own = {f.name for f in fields(spec.config)} | set(RUN_KEYS)
        flat = {k: v for k, v in d.items() if k in own and k != "train" and v is not None}
        # a setting the flat table holds as None (unset) is not filled in as an older default
        return cls.from_flat({**spec.config.read_stored(flat, present=d), **train})


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """Return the settings in a .json or .toml file as one flat mapping (dashes in names read as
    underscores), for :meth:`RunConfig.from_flat`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"config file '{p}': use a .json or .toml file")
    except ValueError as e:
        raise ConfigError(f"config file '{p}' cannot be parsed: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{p}' must hold a table of settings")
    return {k.replace("-", "_"): v for k, v in values.items()}
