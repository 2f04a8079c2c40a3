"""Run folders: fit a model by name, save it, load it back, and use it on new data.

A run folder holds everything a run made and nothing that needs unpickling::

    RUN/
      config.json            the resolved settings, the model's constructor arguments, the data
      model.safetensors      final weights (or fitted state, for PCA)
      checkpoint.safetensors weights + optimiser + RNG state of the last checkpoint (trained models)
      metrics.jsonl          one JSON record per epoch
      figures/*.png

:func:`fit_run` is the one library call behind ``pushforward fit``; :func:`load_model` rebuilds a
model from a folder, refusing folders of another format and tensors that do not fit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pushforward import __version__, datasets, distributed, plots
from pushforward.autoencoder import Autoencoder
from pushforward.checkpoint import (
    load_json,
    load_state_checked,
    load_tensors,
    save_figure,
    save_json,
    save_tensors,
)
from pushforward.errors import CheckpointError, ConfigError, lookup
from pushforward.gan import GAN, RECOMMENDED
from pushforward.nets import MAX_LATENT
from pushforward.pca import PCA, ProbabilisticPCA
from pushforward.quality import sample_quality
from pushforward.reporters import Reporters, TensorBoardLogger
from pushforward.train import (
    CHECKPOINT,
    Progress,
    TrainConfig,
    fit,
    read_metrics,
    seeded,
)
from pushforward.vae import VAE

__all__ = [
    "MODELS",
    "RunConfig",
    "decode_run",
    "encode_run",
    "evaluate_run",
    "fit_run",
    "load_model",
    "load_run_config",
    "sample_run",
]

log = logging.getLogger(__name__)

RUN_FORMAT = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


@dataclass
class RunConfig:
    """Everything ``pushforward fit`` needs; ``train`` holds the optimisation settings."""

    model: str
    data: str
    latent: int = 2
    n: int | None = None
    rows: str | None = None
    loss: str | None = None
    net: str = "mlp"
    hidden: list[int] | None = None
    activation: str = "relu"
    tied: bool = False
    center: bool = True
    sigma: float | None = None
    learn_sigma: bool = False
    kl_weight: float = 1.0
    kl_schedule: str = "constant"
    kl_warmup: float = 10.0
    free_bits: float = 0.0
    noise: str = "gaussian"
    critic_hidden: list[int] | None = None
    critic_steps: int = 1
    critic_lr: float | None = None
    pack: int = 1
    gp_weight: float | None = None
    penalty: str = "gp"
    ema: float = 0.0
    jacobian_truncation: float | None = None
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        lookup(MODELS, self.model, what="model")
        bad = isinstance(self.latent, bool) or not isinstance(self.latent, int)
        if bad or not 1 <= self.latent <= MAX_LATENT:
            raise ConfigError(
                f"latent = {self.latent!r} is not allowed; use an integer from 1 to {MAX_LATENT:,}"
            )
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n = {self.n!r} is not allowed; use an integer ≥ 1")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from one flat mapping of run and training settings (as in a config file)."""
        run_keys = {f.name for f in fields(cls)} - {"train"}
        train_keys = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(values) - run_keys - train_keys)
        if unknown:
            known = ", ".join(sorted(run_keys | train_keys))
            raise ConfigError(f"unknown setting {unknown[0]!r}; known: {known}")
        for key in ("model", "data"):
            if key not in values:
                raise ConfigError(f"the setting {key!r} is required")
        values = {**MODEL_DEFAULTS.get(values["model"], {}), **values}
        train = TrainConfig.from_dict({k: v for k, v in values.items() if k in train_keys})
        return cls(**{k: v for k, v in values.items() if k in run_keys}, train=train)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        return cls.from_flat({**{k: v for k, v in d.items() if k != "train"}, **d.get("train", {})})


# --- the models a run can hold -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelKind:
    """How to build a model of one kind from a run's settings and its data."""

    cls: type
    build: Callable[[RunConfig, datasets.Dataset], Any]
    trained: bool  # by gradient descent through the shared loop, or fitted in closed form


def _build_pca(rc: RunConfig, ds: datasets.Dataset) -> PCA:
    return PCA(rc.latent, center=rc.center)


def _build_ppca(rc: RunConfig, ds: datasets.Dataset) -> ProbabilisticPCA:
    return ProbabilisticPCA(rc.latent)


def _net(rc: RunConfig) -> dict[str, Any]:
    return {"kind": rc.net, "hidden": rc.hidden, "activation": rc.activation}


def _build_ae(rc: RunConfig, ds: datasets.Dataset) -> Autoencoder:
    return Autoencoder(
        ds.dim, rc.latent, loss=rc.loss or "l2", net=_net(rc), tied=rc.tied,
        image_shape=ds.image_shape,
    )  # fmt: skip


def _in_unit_interval(x: Tensor) -> bool:
    return bool(x.min() >= 0) and bool(x.max() <= 1)


def _build_vae(rc: RunConfig, ds: datasets.Dataset) -> VAE:
    # default likelihood: Bernoulli for data in [0, 1] (images), else a Gaussian with learned σ
    loss = rc.loss or ("bce" if _in_unit_interval(ds.x) else "gaussian")
    learn_sigma = rc.learn_sigma or (rc.loss is None and loss == "gaussian" and rc.sigma is None)
    sigma = rc.sigma
    if sigma is None and learn_sigma:
        # start σ at a tenth of the data's spread: started at 1, a Gaussian of learned σ
        # explains low-dimensional data (ring8, grid25) before the latent does, and the
        # posterior collapses onto the prior
        sigma = 0.1 * max(float(ds.x.std(0).mean()), 1e-3)
    return VAE(
        ds.dim, rc.latent, loss=loss, sigma=sigma, learn_sigma=learn_sigma,
        kl_weight=rc.kl_weight, kl_schedule=rc.kl_schedule, kl_warmup=rc.kl_warmup,
        free_bits=rc.free_bits, net=_net(rc), image_shape=ds.image_shape,
    )  # fmt: skip


def _build_gan(rc: RunConfig, ds: datasets.Dataset) -> GAN:
    critic = {**_net(rc), "hidden": rc.critic_hidden if rc.critic_hidden is not None else rc.hidden}
    return GAN(
        ds.dim, rc.latent, noise=rc.noise, loss=rc.loss or "nonsaturating", net=_net(rc),
        critic_net=critic, critic_steps=rc.critic_steps, gp_weight=rc.gp_weight,
        penalty=rc.penalty, pack=rc.pack, critic_lr=rc.critic_lr, ema=rc.ema,
        image_shape=ds.image_shape, jacobian_truncation=rc.jacobian_truncation,
    )  # fmt: skip


MODELS: dict[str, ModelKind] = {
    "pca": ModelKind(PCA, _build_pca, trained=False),
    "ppca": ModelKind(ProbabilisticPCA, _build_ppca, trained=False),
    "ae": ModelKind(Autoencoder, _build_ae, trained=True),
    "vae": ModelKind(VAE, _build_vae, trained=True),
    "gan": ModelKind(GAN, _build_gan, trained=True),
}


def _gan_defaults() -> dict[str, Any]:
    """The benchmarked GAN setting (:data:`pushforward.gan.RECOMMENDED`) as flat run settings."""
    model = dict(RECOMMENDED["model"])
    net = model.pop("net", {}) or {}
    critic = model.pop("critic_net", {}) or {}
    flat: dict[str, Any] = {k: v for k, v in net.items() if k in ("hidden", "activation")}
    if "hidden" in critic:
        flat["critic_hidden"] = critic["hidden"]
    flat.update(model)
    flat.update(RECOMMENDED["train"])
    return flat


# Recommended settings per model where they differ from the general defaults: what a user gets
# without flags is the benchmarked path (see BENCHMARKS.md, "VAE quality").
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {
        "hidden": [512],
        "activation": "silu",
        "lr": 3e-3,
        "batch_size": 64,
        "precision": "auto",
    },
    "gan": _gan_defaults(),
}


def _model_state(model: Any) -> dict[str, Tensor]:
    return model.state_dict() if isinstance(model, nn.Module) else model.get_state()


def save_model(folder: Path, model: Any) -> None:
    """Write the model's weights (or fitted state) to ``folder/model.safetensors`` atomically."""
    save_tensors(folder / WEIGHTS, _model_state(model), metadata={"pushforward": __version__})


def load_run_config(folder: str | Path) -> dict[str, Any]:
    """Return the parsed ``config.json`` of a run folder, checking its format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"run folder '{folder}' not found")
    cfg = load_json(folder / CONFIG)
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT or "model" not in cfg:
        raise CheckpointError(
            f"'{folder / CONFIG}' is not a pushforward run of format {RUN_FORMAT} "
            f"(found format {cfg.get('format') if isinstance(cfg, dict) else None!r})"
        )
    return cfg


def load_model(folder: str | Path) -> Any:
    """Rebuild the model saved in a run folder (final weights, else the last checkpoint)."""
    folder = Path(folder)
    cfg = load_run_config(folder)
    kind = lookup(MODELS, cfg["model"]["kind"], what="model")
    config = cfg["model"]["config"]
    if (folder / WEIGHTS).exists():
        state, source = load_tensors(folder / WEIGHTS), folder / WEIGHTS
    elif (folder / CHECKPOINT).exists():
        full = load_tensors(folder / CHECKPOINT)
        state = {k[6:]: v for k, v in full.items() if k.startswith("model.")}
        source = folder / CHECKPOINT
    else:
        raise CheckpointError(f"run folder '{folder}' holds no {WEIGHTS} and no {CHECKPOINT}")
    if kind.cls is GAN and "jacobian_truncation" not in config:
        config = {**config, "jacobian_truncation": 0.0}  # a run from before truncation existed
    if issubclass(kind.cls, nn.Module):
        try:
            model = kind.cls(**config)
        except TypeError as e:
            raise CheckpointError(
                f"'{folder / CONFIG}' does not describe a {kind.cls.__name__}: {e}"
            ) from None
        load_state_checked(model, state, str(source))
        model.eval()
        return model
    return kind.cls.from_state(config, state)


# --- fit -----------------------------------------------------------------------------------------


def _fresh_folder(rc: RunConfig, ds: datasets.Dataset) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{rc.model}-{ds.name}-{stamp}"
    folder, i = base, 1
    while folder.exists():
        folder, i = Path(f"{base}-{i}"), i + 1
    return folder


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
    kind = lookup(MODELS, rc.model, what="model")
    ctx = distributed.init(rc.train.device)
    if ctx.active and not kind.trained:
        raise ConfigError(f"{rc.model} is fitted in closed form; run it in one process")
    gen = torch.Generator().manual_seed(rc.train.seed)
    ds = datasets.select_rows(datasets.load_data(rc.data, n=rc.n, generator=gen), rc.rows)
    folder = Path(out) if out is not None else _fresh_folder(rc, ds)
    folder = Path(distributed.broadcast_text(str(folder)))  # rank 0 names it for every process
    if resume:
        if not kind.trained:
            raise ConfigError(f"{rc.model} is fitted in closed form; there is nothing to resume")
        if not (folder / CHECKPOINT).exists():
            log.warning("'%s' holds no checkpoint yet; training starts from the beginning", folder)
            resume = False
    elif distributed.any_true(ctx.main and (folder / CONFIG).exists()):
        raise CheckpointError(
            f"'{folder}' already holds a run; use --resume to continue it or choose another --out"
        )
    with seeded(rc.train.seed):
        model = kind.build(rc, ds)
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
    if ctx.main:
        folder.mkdir(parents=True, exist_ok=True)
        save_json(folder / CONFIG, record)
    distributed.barrier()
    if kind.trained:
        if tensorboard is not None:
            board = TensorBoardLogger(tensorboard, model=model, image_shape=ds.image_shape)
            progress = Reporters(progress, board)
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


def codes(model: Any, x: Tensor) -> Tensor:
    """Return the latent codes (n, k) of x: f(x), or the posterior mean μ(x) for a VAE."""
    with torch.no_grad():
        z = model.encode(x)
    return z[0] if isinstance(z, tuple) else z


def write_figures(folder: Path, model: Any, ds: datasets.Dataset) -> list[Path]:
    """Draw the run's figures into ``folder/figures``: reconstructions and latents (models with
    an encoder), samples (generative models), the training curves."""
    out = []
    figs = folder / "figures"
    encodes = hasattr(model, "encode")
    if encodes:
        out += _encoder_figures(figs, model, ds)
    if hasattr(model, "sample"):
        samples = model.sample(
            64 if ds.image_shape else 2500, generator=torch.Generator().manual_seed(0)
        )
        label = _sample_label(model)
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
    gaussian_prior = isinstance(model, VAE) or getattr(model, "noise", None) == "gaussian"
    if gaussian_prior and model.latent == 2 and ds.image_shape is not None:
        fig = plots.image_grid(
            manifold(model, 15), ds.image_shape, ncols=15, title="decoded manifold", scale=0.45
        )
        out.append(save_figure(fig, figs / "manifold.png"))
    if encodes:
        fig = _error_vs_k_figure(model, ds.x)
        out.append(save_figure(fig, figs / "error_vs_k.png"))
    history = read_metrics(folder)
    if history:
        fig = plots.gan_curves(history) if isinstance(model, GAN) else plots.loss_curves(history)
        out.append(save_figure(fig, figs / "loss.png"))
    return out


def _encoder_figures(figs: Path, model: Any, ds: datasets.Dataset) -> list[Path]:
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
        title = "posterior means μ(x)" if isinstance(model, VAE) else "latent codes f(x)"
        fig = plots.scatter_2d(z[:, :2], labels=labels, title=title, size=3.0)
        out.append(save_figure(fig, figs / "latent.png"))
    return out


def manifold(model: Any, side: int = 15) -> Tensor:
    """Return decoded images (side², d) on a grid of 2-D latents spaced by the Gaussian inverse CDF.

    z = (Φ⁻¹(u), Φ⁻¹(v)) for u, v evenly spaced in (0, 1): each cell holds equal prior mass.
    """
    u = torch.linspace(0.5 / side, 1 - 0.5 / side, side)
    zz = torch.special.ndtri(u)
    grid = torch.stack(torch.meshgrid(zz, zz.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        return model.decode(grid).clamp(0, 1)


def _error_vs_k_figure(model: Any, x: Tensor) -> Any:
    """PCA's training error for every k (one SVD) beside this model's, both in squared ℓ2."""
    n, d = x.shape
    s2 = torch.linalg.svdvals((x - x.mean(0)).double()).pow(2)
    kmax = min(32, d, n - 1)
    ks = list(range(1, kmax + 1))
    pca = [float(s2[k:].sum()) / n for k in ks]
    with torch.no_grad():
        own = float((model.decode(codes(model, x)).to(x.dtype) - x).pow(2).sum(1).mean())
    name = type(model).__name__
    curves = {"PCA (closed form)": (ks, pca), f"this {name}": ([_latent_dim(model)], [own])}
    return plots.error_vs_k(curves, title="training error against latent size k")


# --- use a run -----------------------------------------------------------------------------------


def _run_data(
    model: Any, data: str, n: int | None, rows: str | None, seed: int
) -> datasets.Dataset:
    ds = datasets.load_data(data, n=n, generator=torch.Generator().manual_seed(seed))
    ds = datasets.select_rows(ds, rows)
    _check_dim(model, ds.dim, f"data {data!r}")
    return ds


def encode_run(
    folder: str | Path, data: str, *, n: int | None = None, rows: str | None = None, seed: int = 0
) -> Tensor:
    """Return the latent codes (n, k) of the run's model for the data set ``data``."""
    model = load_model(folder)
    ds = _run_data(model, data, n, rows, seed)
    return codes(model, ds.x)


def decode_run(folder: str | Path, z: Tensor) -> Tensor:
    """Return the decoded points (n, d) of latents z (n, k) under the run's model."""
    model = load_model(folder)
    k = _latent_dim(model)
    if z.dim() != 2 or z.shape[1] != k:
        raise ConfigError(f"latents must have shape (n, {k}) for this run, got {tuple(z.shape)}")
    with torch.no_grad():
        return model.decode(z)


def _sample_label(model: Any) -> str:
    """Return what a model's samples are, for figure titles: g#μ, or g#μ_A under a GAN's
    Jacobian truncation."""
    q = getattr(model, "jacobian_truncation", 0.0)
    return f"samples of g#μ_A (Jacobian truncation {100 * q:g}%)" if q else "samples of g#μ"


def _sampling(model: Any, folder: str | Path, jacobian_truncation: float | None) -> Any:
    """Return the model, its Jacobian truncation set to ``jacobian_truncation`` when given (GAN
    runs only)."""
    if jacobian_truncation is None:
        return model
    if not isinstance(model, GAN):
        raise ConfigError(
            f"jacobian_truncation is for GAN runs; {str(folder)!r} holds a {type(model).__name__}"
        )
    model.jacobian_truncation = jacobian_truncation  # the setter checks it
    return model


def sample_run(
    folder: str | Path, n: int, *, seed: int = 0, jacobian_truncation: float | None = None
) -> Tensor:
    """Return exactly n samples (n, d) of the run's generative model g#μ; a GAN's with the given
    Jacobian truncation instead of the one it was fitted with."""
    model = load_model(folder)
    if not hasattr(model, "sample"):
        kinds = ", ".join(k for k, v in MODELS.items() if hasattr(v.cls, "sample"))
        raise ConfigError(f"a {type(model).__name__} run cannot sample; models that can: {kinds}")
    model = _sampling(model, folder, jacobian_truncation)
    with torch.no_grad():
        return model.sample(n, generator=torch.Generator().manual_seed(seed)).float()


def evaluate_run(
    folder: str | Path,
    data: str,
    *,
    n: int | None = None,
    rows: str | None = None,
    iwae_k: int = 1000,
    seed: int = 0,
    quality: bool = True,
    jacobian_truncation: float | None = None,
) -> dict[str, Any]:
    """Return the run's metrics on ``data``: reconstruction error (models with an encoder); for
    likelihood models the ELBO, the IWAE log-likelihood ± its Monte Carlo standard error and bits
    per dimension (nats per example unless stated); with ``quality``, for models that sample,
    the sample-quality metrics of :mod:`pushforward.quality` with their real-vs-real floors (a
    GAN's samples under its Jacobian truncation, or ``jacobian_truncation`` when given; the
    share used is reported).
    """
    model = _sampling(load_model(folder), folder, jacobian_truncation)
    full = datasets.load_data(data, n=n, generator=torch.Generator().manual_seed(seed))
    ds = datasets.select_rows(full, rows)
    _check_dim(model, ds.dim, f"data {data!r}")
    x = ds.x.double() if not isinstance(model, nn.Module) else ds.x
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {
        "run": str(folder),
        "model": type(model).__name__,
        "data": data,
        "rows": rows,
        "n": ds.n,
        "dim": ds.dim,
    }
    if isinstance(model, GAN):
        out["jacobian_truncation"] = model.jacobian_truncation
    if hasattr(model, "encode"):
        with torch.no_grad():
            recon = model.decode(codes(model, x)).to(x.dtype)
        out["squared_error"] = float((recon - x).pow(2).sum(1).mean())
    log2 = math.log(2)
    if isinstance(model, VAE):
        e = model.elbo(ds.x, generator=gen)
        ll = model.log_likelihood(ds.x, k=iwae_k, generator=gen)
        out.update(
            elbo=float(e["elbo"].mean()),
            neg_elbo=-float(e["elbo"].mean()),
            log_px_given_z=float(e["log_px_given_z"].mean()),
            kl=float(e["kl"].mean()),
            iwae_k=iwae_k,
            log_likelihood=ll.mean,
            log_likelihood_stderr=ll.mean_stderr,
            nll=-ll.mean,
            bits_per_dim=-ll.mean / (ds.dim * log2),
            **{
                k: v
                for k, v in model.diagnostics(ds.x, generator=gen).items()
                if k != "posterior_collapse"
            },
        )
    elif isinstance(model, ProbabilisticPCA):
        lp = float(model.log_prob(x).mean())
        out.update(log_likelihood=lp, nll=-lp, bits_per_dim=-lp / (ds.dim * log2), exact=True)
    if quality and hasattr(model, "sample"):

        def draw(m: int, g: torch.Generator) -> Tensor:
            return model.sample(m, generator=g)

        out.update(sample_quality(draw, ds, full, seed=seed))
    return out


def _latent_dim(model: Any) -> int:
    return int(model.latent if isinstance(model, nn.Module) else model.n_components)


def _check_dim(model: Any, dim: int, what: str) -> None:
    want = int(model.dim if isinstance(model, nn.Module) else model.n_features_)
    if dim != want:
        raise ConfigError(f"{what} has dimension {dim}, but the run's model expects {want}")
