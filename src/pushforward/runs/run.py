"""Run folders: fit a model by name, save it, load it back, and use it on new data.

A run folder holds everything a run made and nothing that needs unpickling::

    RUN/
      config.json            the resolved settings, the model's constructor arguments, the data
      model.safetensors      final weights (or fitted state, for PCA)
      checkpoint.safetensors weights + optimiser + RNG state of the last checkpoint (trained models)
      metrics.jsonl          one JSON record per epoch
      snapshots.safetensors  fixed-seed samples every K epochs (``snapshot_every``; optional)
      figures/*.png

:func:`fit_run` is the one library call behind ``pushforward fit``; :func:`load_model` rebuilds a
model from a folder, refusing folders of another format and tensors that do not fit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.core import (
    CheckpointError,
    ConfigError,
    Model,
    ModelConfig,
    ModelSpec,
    check_tensor_header,
    load_json,
    load_tensors,
    lookup,
    save_figure,
    save_json,
    save_tensors,
)
from pushforward.core.version import __version__
from pushforward.data import datasets
from pushforward.metrics import sample_quality, truth_fidelity
from pushforward.models.registry import MODELS
from pushforward.runs import plots
from pushforward.train import (
    CHECKPOINT,
    Progress,
    Reporters,
    SampleSnapshots,
    TensorBoardLogger,
    TrainConfig,
    check_batch,
    distributed,
    fit,
    read_metrics,
    seeded,
)

__all__ = [
    "MAX_MODEL_BYTES",
    "MODELS",
    "RunConfig",
    "decode_run",
    "encode_run",
    "evaluate_run",
    "fit_run",
    "load_model",
    "load_run_config",
    "plan_run",
    "sample_run",
]

log = logging.getLogger(__name__)

RUN_FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1: the run settings as one flat table for every model
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
MAX_MODEL_BYTES = 4 * 2**30
"""The largest model state a run folder may ask to load (4 GiB): a larger one is a typo or a
hostile file, refused before anything is allocated."""

RUN_KEYS = ("model", "data", "n", "rows")
SNAPSHOT_IMAGES, SNAPSHOT_POINTS = 64, 1000  # samples per snapshot: an image grid, a scatter


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
                f"the settings of a {self.model} run must be a {spec.config.__name__}, "
                f"got a {type(self.settings).__name__}"
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
        model_keys = [f.name for f in fields(spec.config)]
        train_keys = [f.name for f in fields(TrainConfig)]
        unknown = sorted(set(values) - set(RUN_KEYS) - set(model_keys) - set(train_keys))
        if unknown:
            name, kind = unknown[0], values["model"]
            others = [m for m, s in MODELS.items() if name in {f.name for f in fields(s.config)}]
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
        return {**run, **self.settings.to_dict(), **self.train.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as stored in a run folder: run keys, ``settings``, ``train``."""
        assert self.settings is not None
        run = {k: getattr(self, k) for k in RUN_KEYS}
        return {**run, "settings": self.settings.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """Build from :meth:`to_dict`'s output, or from a format-1 run's flat table (whose
        settings of other models, and unset ones, are dropped)."""
        train = d.get("train", {})
        if "settings" in d:
            run = {k: d[k] for k in RUN_KEYS if k in d}
            stored = lookup(MODELS, d.get("model"), what="model").config.stored_defaults()
            older = {k: v for k, v in stored.items() if k not in d["settings"]}
            return cls.from_flat({**run, **older, **d["settings"], **train})
        spec = lookup(MODELS, d.get("model"), what="model")
        own = {f.name for f in fields(spec.config)} | set(RUN_KEYS)
        flat = {k: v for k, v in d.items() if k in own and k != "train" and v is not None}
        older = {k: v for k, v in spec.config.stored_defaults().items() if k not in d}
        return cls.from_flat({**older, **flat, **train})


# --- loading ------------------------------------------------------------------------------------


def save_model(folder: Path, model: Model) -> None:
    """Write the model's weights (or fitted state) to ``folder/model.safetensors`` atomically."""
    save_tensors(folder / WEIGHTS, model.get_state(), metadata={"pushforward": __version__})


def load_run_config(folder: str | Path) -> dict[str, Any]:
    """Return the parsed ``config.json`` of a run folder, checking its format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"run folder '{folder}' not found")
    cfg = load_json(folder / CONFIG)
    ok = isinstance(cfg, dict) and cfg.get("format") in READABLE_FORMATS
    if not ok or not isinstance(cfg.get("model"), dict) or not isinstance(cfg.get("data"), dict):
        formats = " or ".join(map(str, READABLE_FORMATS))
        raise CheckpointError(
            f"'{folder / CONFIG}' is not a pushforward run of format {formats} "
            f"(found format {cfg.get('format') if isinstance(cfg, dict) else None!r})"
        )
    return cfg


def load_model(folder: str | Path) -> Model:
    """Rebuild the model saved in a run folder (final weights, else the last checkpoint).

    The weights file's header is checked against the shapes the run's config makes, and their
    total size against :data:`MAX_MODEL_BYTES`, before any tensor is allocated.
    """
    folder = Path(folder)
    cfg = load_run_config(folder)
    spec = lookup(MODELS, cfg["model"].get("kind"), what="model")
    config = cfg["model"].get("config")
    shape = cfg["data"].get("shape")
    if not isinstance(config, dict) or not isinstance(shape, list) or len(shape) != 2:
        raise CheckpointError(f"'{folder / CONFIG}' lacks the model's config or the data's shape")
    try:
        expected = spec.cls.state_shapes(config, (int(shape[0]), int(shape[1])))
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"'{folder / CONFIG}' describes no valid model: {e}") from None
    size = sum(math.prod(s) for s in expected.values()) * 4
    if size > MAX_MODEL_BYTES:
        raise CheckpointError(
            f"'{folder / CONFIG}' asks for a model of {size / 2**30:.1f} GiB, more than the "
            f"{MAX_MODEL_BYTES / 2**30:.0f} GiB a run may load"
        )
    if (folder / WEIGHTS).exists():
        source, prefix = folder / WEIGHTS, ""
    elif (folder / CHECKPOINT).exists():
        source, prefix = folder / CHECKPOINT, "model."
    else:
        raise CheckpointError(f"run folder '{folder}' holds no {WEIGHTS} and no {CHECKPOINT}")
    check_tensor_header(source, expected, max_bytes=MAX_MODEL_BYTES, prefix=prefix)
    state = {k[len(prefix) :]: v for k, v in load_tensors(source).items() if k.startswith(prefix)}
    model = spec.cls.from_config(config)
    model.load_state(state, source=str(source))
    model.eval()
    return model


# --- fit -----------------------------------------------------------------------------------------


def _fresh_folder(rc: RunConfig, ds: datasets.Dataset) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{rc.model}-{ds.name}-{stamp}"
    folder, i = base, 1
    while folder.exists():
        folder, i = Path(f"{base}-{i}"), i + 1
    return folder


def _load(rc: RunConfig) -> datasets.Dataset:
    gen = torch.Generator().manual_seed(rc.train.seed)
    return datasets.select_rows(datasets.load_data(rc.data, n=rc.n, generator=gen), rc.rows)


def _build(rc: RunConfig, ds: datasets.Dataset) -> tuple[Model, dict[str, Any]]:
    """Return a fresh model for ``ds`` as ``rc`` describes, and the run record of config.json."""
    assert rc.settings is not None
    with seeded(rc.train.seed):
        model = rc.settings.build(ds)
    if model.trained:
        default = rc.spec.train_defaults_for(datasets.data_kind(rc.data)).get("batch_size")
        if rc.train.batch_size > ds.n and rc.train.batch_size == default:
            # a model's benchmarked batch (flow matching's 2,048) on data smaller than it: all
            # of the data each step, recorded as such in config.json
            log.info("batch_size %d > %d rows of %s: full batch", default, ds.n, ds.name)
            rc.train.batch_size = 0
        check_batch(rc.train, ds.n)
    if rc.train.snapshot_every and not model.generative:
        raise ConfigError(
            f"snapshot_every = {rc.train.snapshot_every} keeps samples over training, but a "
            f"{type(model).__name__} cannot sample; use 0 (off) or a generative model: "
            + ", ".join(k for k, s in MODELS.items() if s.cls.generative and s.trained)
        )
    record = {
        "format": RUN_FORMAT,
        "pushforward": __version__,
        "torch": torch.__version__,
        "run": rc.to_dict(),
        "model": {"kind": rc.model, "config": model.get_config()},
        "data": {
            "spec": rc.data,
            "name": ds.name,
            "shape": list(ds.x.shape),
            "image_shape": list(ds.image_shape) if ds.image_shape else None,
        },
    }
    return model, record


def plan_run(rc: RunConfig) -> dict[str, Any]:
    """Return the record :func:`fit_run` would write to ``config.json`` (the resolved settings,
    the model's constructor arguments, the data's shape), loading the data and building the
    model but fitting and writing nothing: every setting is checked."""
    _, record = _build(rc, _load(rc))
    return record


def fit_run(
    rc: RunConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    figures: bool = True,
    tensorboard: str | Path | None = None,
) -> Path:
    """Fit the model ``rc`` describes on its data, write the run folder, and return its path.

    ``out`` names the folder (default: a fresh one under ``runs/``); it must not already hold a
    run unless ``resume`` is set, in which case training continues from its last checkpoint.
    With ``tensorboard``, each epoch's scalars (and samples, for image models) go there too.
    """
    spec = rc.spec
    assert rc.settings is not None
    ctx = distributed.init(rc.train.device)
    if ctx.active and not spec.trained:
        raise ConfigError(f"{rc.model} is fitted in closed form; run it in one process")
    ds = _load(rc)
    folder = Path(out) if out is not None else _fresh_folder(rc, ds)
    folder = Path(distributed.broadcast_text(str(folder)))  # rank 0 names it for every process
    if resume:
        if not spec.trained:
            raise ConfigError(f"{rc.model} is fitted in closed form; there is nothing to resume")
        if not (folder / CHECKPOINT).exists():
            log.warning("'%s' holds no checkpoint yet; training starts from the beginning", folder)
            resume = False
    elif distributed.any_true(ctx.main and (folder / CONFIG).exists()):
        raise CheckpointError(
            f"'{folder}' already holds a run; use --resume to continue it or choose another --out"
        )
    model, record = _build(rc, ds)
    if resume:
        # refuse a checkpoint these settings cannot hold before config.json is rewritten, so a
        # failed resume leaves the run as it was (in every process, so that all stop together)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_tensor_header(folder / CHECKPOINT, expected, max_bytes=2**62, prefix="model.")
    if ctx.main:
        folder.mkdir(parents=True, exist_ok=True)
        save_json(folder / CONFIG, record)
    distributed.barrier()
    if model.trained:
        if tensorboard is not None:
            board = TensorBoardLogger(tensorboard, model=model, image_shape=ds.image_shape)
            progress = Reporters(progress, board)
        if rc.train.snapshot_every:
            rows = SNAPSHOT_IMAGES if ds.image_shape is not None else SNAPSHOT_POINTS
            snaps = SampleSnapshots(
                model, rows, every=rc.train.snapshot_every, seed=rc.train.seed, folder=folder
            )
            progress = Reporters(progress, snaps)
        fit(model, ds.x, rc.train, run_dir=folder, resume=resume, progress=progress)
    else:
        model.fit(ds.x)
    if ctx.main:
        save_model(folder, model)
        if figures:
            write_figures(folder, model, ds)
        log.info("run written to %s", folder)
    distributed.barrier()
    return folder


def codes(model: Model, x: Tensor) -> Tensor:
    """Return the latent codes (n, k) of x (n, d) under a model with an encoder."""
    with torch.no_grad():
        return model.encode(x)


def write_figures(folder: Path, model: Model, ds: datasets.Dataset) -> list[Path]:
    """Draw the run's figures into ``folder/figures``: reconstructions and latents (models with
    an encoder), samples (generative models), the training error against PCA's for every latent
    size (encoders with a bottleneck, latent < d: a bijection's error is its solver's), the
    training curves."""
    out = []
    figs = folder / "figures"
    if model.has_encoder:
        out += _encoder_figures(figs, model, ds)
    if model.generative:
        samples = model.sample(
            64 if ds.image_shape else 2500, generator=torch.Generator().manual_seed(0)
        )
        label = model.sample_label
        if ds.image_shape is not None:
            fig = plots.image_grid(
                samples.float().clamp(0, 1), ds.image_shape, ncols=16, title=label
            )
        elif ds.dim == 2:
            fig = plots.scatter_2d(ds.x[:2500], others=[(samples, label)], title="data and samples")
        else:
            fig = None
        if fig is not None:
            out.append(save_figure(fig, figs / "samples.png"))
    measure = model.latent_measure
    images = ds.image_shape is not None
    if measure is not None and measure.has_quantile and model.latent == 2 and images:
        fig = plots.image_grid(
            manifold(model, 15), ds.image_shape, ncols=15, title="decoded manifold", scale=0.45
        )
        out.append(save_figure(fig, figs / "manifold.png"))
    if model.has_encoder and model.latent < ds.dim:  # a bottleneck: the error says something
        fig = _error_vs_k_figure(model, ds.x)
        out.append(save_figure(fig, figs / "error_vs_k.png"))
    history = read_metrics(folder)
    if history:
        fig = lookup(plots.HISTORY_PLOTS, model.history_plot, what="history plot")(history)
        out.append(save_figure(fig, figs / "loss.png"))
    return out


def _encoder_figures(figs: Path, model: Model, ds: datasets.Dataset) -> list[Path]:
    """Reconstructions (images, or 2-D points) and the latent codes coloured by label."""
    out = []
    x = ds.x[:16]
    with torch.no_grad():
        recon = model.decode(codes(model, x))
    z = codes(model, ds.x[:5000])
    labels = ds.labels[:5000] if ds.labels is not None else None
    if ds.image_shape is not None:
        grid = torch.cat([x, recon.to(x.dtype).clamp(0, 1)])
        fig = plots.image_grid(
            grid, ds.image_shape, ncols=16, title="originals (top), reconstructions"
        )
        out.append(save_figure(fig, figs / "reconstructions.png"))
    elif ds.dim == 2:
        with torch.no_grad():
            back = model.decode(z)
        fig = plots.scatter_2d(ds.x[:5000], others=[(back, "g(f(x))")], title="reconstructions")
        out.append(save_figure(fig, figs / "reconstructions.png"))
    if z.shape[1] >= 2:
        fig = plots.scatter_2d(z[:, :2], labels=labels, title=model.code_label, size=3.0)
        out.append(save_figure(fig, figs / "latent.png"))
    return out


def manifold(model: Model, side: int = 15) -> Tensor:
    """Return decoded images (side², d) on a grid of 2-D latents spaced by the inverse marginal
    CDFs of the model's base measure μ (one with a quantile function).

    z = (F₁⁻¹(u), F₂⁻¹(v)) for u, v evenly spaced in (0, 1) (Φ⁻¹ for a Gaussian μ): each cell
    of a product measure holds equal prior mass; for a mixture prior, each row and each column
    of cells does.
    """
    u = torch.linspace(0.5 / side, 1 - 0.5 / side, side)
    uu = torch.stack(torch.meshgrid(u, u.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    grid = model.latent_measure.quantile(uu)  # (side², 2)
    with torch.no_grad():
        return model.decode(grid).clamp(0, 1)


def _error_vs_k_figure(model: Model, x: Tensor) -> Any:
    """PCA's training error for every k (one SVD) beside this model's, both in squared ℓ2."""
    n, d = x.shape
    s2 = torch.linalg.svdvals((x - x.mean(0)).double()).pow(2)
    kmax = min(32, d, n - 1)
    ks = list(range(1, kmax + 1))
    pca = [float(s2[k:].sum()) / n for k in ks]
    with torch.no_grad():
        own = float((model.decode(codes(model, x)).to(x.dtype) - x).pow(2).sum(1).mean())
    name = type(model).__name__
    curves = {"PCA (closed form)": (ks, pca), f"this {name}": ([model.latent], [own])}
    return plots.error_vs_k(curves, title="training error against latent size k")


# --- use a run -----------------------------------------------------------------------------------


def _run_data(
    model: Model, data: str, n: int | None, rows: str | None, seed: int
) -> datasets.Dataset:
    ds = datasets.load_data(data, n=n, generator=torch.Generator().manual_seed(seed))
    ds = datasets.select_rows(ds, rows)
    _check_dim(model, ds.dim, f"data {data!r}")
    return ds


def _needs(model: Model, folder: str | Path, what: str, can: Callable[[Any], bool]) -> None:
    """Refuse a model that lacks a capability, naming the kinds of model that have it."""
    if not can(model):
        kinds = ", ".join(k for k, spec in MODELS.items() if can(spec.cls))
        raise ConfigError(
            f"{str(folder)!r} holds a {type(model).__name__}, which {what}; "
            f"models that can: {kinds}"
        )


def encode_run(
    folder: str | Path, data: str, *, n: int | None = None, rows: str | None = None, seed: int = 0
) -> Tensor:
    """Return the latent codes (n, k) of the run's model for the data set ``data``."""
    model = load_model(folder)
    _needs(model, folder, "has no encoder", lambda m: m.has_encoder)
    ds = _run_data(model, data, n, rows, seed)
    return codes(model, ds.x)


def decode_run(folder: str | Path, z: Tensor) -> Tensor:
    """Return the decoded points (n, d) of latents z (n, k) under the run's model."""
    model = load_model(folder)
    k = model.latent
    if z.dim() != 2 or z.shape[1] != k:
        raise ConfigError(f"latents must have shape (n, {k}) for this run, got {tuple(z.shape)}")
    with torch.no_grad():
        return model.decode(z)


def _sampling(model: Model, sampling: Mapping[str, Any]) -> Model:
    """Return the model with the sampling settings that are given (not None) applied."""
    model.set_sampling(**{k: v for k, v in sampling.items() if v is not None})
    return model


def sample_run(
    folder: str | Path, n: int, *, seed: int = 0, with_cost: bool = False, **sampling: Any
) -> Any:
    """Return exactly n samples (n, d) of the run's generative model g#μ (with ``with_cost``,
    also its :meth:`~pushforward.contract.Model.sampling_cost`); ``sampling`` changes the
    model's sampling settings (its ``sampling_options``, e.g. a GAN's ``jacobian_truncation``)
    from those it was fitted with."""
    model = load_model(folder)
    _needs(model, folder, "cannot sample", lambda m: m.generative)
    model = _sampling(model, sampling)
    with torch.no_grad():
        y = model.sample(n, generator=torch.Generator().manual_seed(seed)).float()
    return (y, model.sampling_cost()) if with_cost else y


def evaluate_run(
    folder: str | Path,
    data: str,
    *,
    n: int | None = None,
    rows: str | None = None,
    iwae_k: int = 1000,
    seed: int = 0,
    quality: bool = True,
    **sampling: Any,
) -> dict[str, Any]:
    """Return the run's metrics on ``data`` (keys: :func:`~pushforward.runs.result_keys`): the
    model's own
    (:meth:`~pushforward.core.Model.evaluate`: reconstruction error, likelihoods in nats per
    example) and, with ``quality``, for models that sample, the sample-quality metrics of
    :mod:`pushforward.quality` with their real-vs-real floors, and where the data's true density
    is known (the built-in mixtures, ``mixture:FILE``) KL(p ‖ q) in nats
    (:func:`pushforward.fidelity.truth_fidelity`); ``sampling`` changes the model's
    sampling settings as in :func:`sample_run` (the ones used are reported).
    """
    model = _sampling(load_model(folder), sampling)
    full = datasets.load_data(data, n=n, generator=torch.Generator().manual_seed(seed))
    ds = datasets.select_rows(full, rows)
    _check_dim(model, ds.dim, f"data {data!r}")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {
        "run": str(folder),
        "model": type(model).__name__,
        "data": data,
        "rows": rows,
        "n": ds.n,
        "dim": ds.dim,
        **model.sampling_settings(),
    }
    out.update(model.evaluate(ds.x, generator=gen, iwae_k=iwae_k))
    if quality and model.generative:

        def draw(m: int, g: torch.Generator) -> Tensor:
            return model.sample(m, generator=g)

        out.update(sample_quality(draw, ds, full, seed=seed))
        out.update({f"sampling_{k}": v for k, v in model.sampling_cost().items()})
    if quality and ds.distribution is not None:  # a known truth: KL(p ‖ q) in nats
        gen = torch.Generator().manual_seed(seed)
        out.update(truth_fidelity(model, ds.distribution, generator=gen, iwae_k=iwae_k))
    return out


def _check_dim(model: Model, dim: int, what: str) -> None:
    if dim != model.dim:
        raise ConfigError(f"{what} has dimension {dim}, but the run's model expects {model.dim}")
