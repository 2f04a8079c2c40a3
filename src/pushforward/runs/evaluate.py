"""Using a fitted run: encode, decode and sample with its model, and evaluate it on data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.core import ConfigError, Model, a_or_an
from pushforward.data import datasets
from pushforward.metrics import sample_quality, truth_fidelity
from pushforward.models.registry import MODELS
from pushforward.runs.figures import codes
from pushforward.runs.folder import load_model
from pushforward.train import to_model_device

__all__ = ["decode_run", "encode_run", "evaluate_run", "sample_run"]


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
            f"{str(folder)!r} holds {a_or_an(type(model).__name__)}, which {what}; "
            f"models that can: {kinds}"
        )


def encode_run(
    folder: str | Path,
    data: str,
    *,
    n: int | None = None,
    rows: str | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Tensor:
    """Return the latent codes (n, k), on the CPU, of the run's model for the data set
    ``data``, computed on ``device`` (a name :func:`~pushforward.train.resolve_device` takes)."""
    model = load_model(folder, device=device)
    _needs(model, folder, "has no encoder", lambda m: m.has_encoder)
    ds = _run_data(model, data, n, rows, seed)
    return codes(model, ds.x)


def decode_run(folder: str | Path, z: Tensor, *, device: str = "auto") -> Tensor:
    """Return the decoded points (n, d), on the CPU, of latents z (n, k) under the run's model,
    computed on ``device``."""
    model = load_model(folder, device=device)
    k = model.latent
    if z.dim() != 2 or z.shape[1] != k:
        raise ConfigError(f"latents must have shape (n, {k}) for this run, got {tuple(z.shape)}")
    with torch.no_grad():
        return model.decode(to_model_device(z, model)).cpu()


def _sampling(model: Model, sampling: Mapping[str, Any]) -> Model:
    """Return the model with the sampling settings that are given (not None) applied."""
    model.set_sampling(**{k: v for k, v in sampling.items() if v is not None})
    return model


def sample_run(
    folder: str | Path,
    n: int,
    *,
    seed: int = 0,
    with_cost: bool = False,
    device: str = "auto",
    **sampling: Any,
) -> Any:
    """Return exactly n samples (n, d), on the CPU, of the run's generative model g#μ (with
    ``with_cost``, also its :meth:`~pushforward.contract.Model.sampling_cost`), drawn on
    ``device``; ``sampling`` changes the model's sampling settings (its ``sampling_options``,
    e.g. a GAN's ``jacobian_truncation``) from those it was fitted with. The noise comes from a
    CPU generator seeded ``seed`` on every device, so the samples agree across devices up to
    their arithmetic."""
    model = load_model(folder, device=device)
    _needs(model, folder, "cannot sample", lambda m: m.generative)
    model = _sampling(model, sampling)
    with torch.no_grad():
        y = model.sample(n, generator=torch.Generator().manual_seed(seed)).float().cpu()
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
    device: str = "auto",
    **sampling: Any,
) -> dict[str, Any]:
    """Return the run's metrics on ``data`` (keys: :func:`~pushforward.runs.result_keys`): the
    model's own
    (:meth:`~pushforward.core.Model.evaluate`: reconstruction error, likelihoods in nats per
    example) and, with ``quality``, for models that sample, the sample-quality metrics of
    :mod:`pushforward.quality` with their real-vs-real floors, and where the data's true density
    is known (the built-in mixtures, ``mixture:FILE``) KL(p ‖ q) in nats
    (:func:`pushforward.fidelity.truth_fidelity`); ``sampling`` changes the model's
    sampling settings as in :func:`sample_run` (the ones used are reported). The model computes
    on ``device``; the data go there once.
    """
    model = _sampling(load_model(folder, device=device), sampling)
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
    out.update(model.evaluate(to_model_device(ds.x, model), generator=gen, iwae_k=iwae_k))
    if quality and model.generative:

        def draw(m: int, g: torch.Generator) -> Tensor:
            with torch.no_grad():
                return model.sample(m, generator=g).cpu()  # compared with the data on the CPU

        out.update(sample_quality(draw, ds, full, seed=seed))
        out.update({f"sampling_{k}": v for k, v in model.sampling_cost().items()})
    if quality and ds.distribution is not None:  # a known truth: KL(p ‖ q) in nats
        gen = torch.Generator().manual_seed(seed)
        out.update(truth_fidelity(model, ds.distribution, generator=gen, iwae_k=iwae_k))
    return out


def _check_dim(model: Model, dim: int, what: str) -> None:
    if dim != model.dim:
        raise ConfigError(f"{what} has dimension {dim}, but the run's model expects {model.dim}")
