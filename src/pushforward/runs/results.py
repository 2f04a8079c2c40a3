"""The keys :func:`~pushforward.runs.evaluate_run` returns, gathered for one kind of model."""

from __future__ import annotations

import math
from typing import Any

from pushforward.core import ENCODER_KEYS, LIKELIHOOD_KEYS, ResultKey

__all__ = [
    "QUALITY_KEYS",
    "RESULT_KEYS",
    "RUN_RESULT_KEYS",
    "format_result",
    "result_keys",
    "strict_json",
]

RUN_RESULT_KEYS: dict[str, ResultKey] = {
    "run": ResultKey("run", "", "the run folder"),
    "model": ResultKey("model", "", "the model's class"),
    "data": ResultKey("data", "", "the data spec evaluated on"),
    "rows": ResultKey("rows", "", "the rows of the data used (A:B), or null for all"),
    "n": ResultKey("rows evaluated", ",", "number of rows evaluated"),
    "dim": ResultKey("dimension", "", "data dimension d"),
}
"""What every evaluation says of itself: the run, the model, the data."""

QUALITY_KEYS: dict[str, ResultKey] = {
    "quality_samples": ResultKey("quality samples", ",", "points per set of the distances below"),
    "mmd2": ResultKey("MMD²", ".5f", "unbiased MMD², samples vs data", floor="mmd2_floor"),
    "mmd2_floor": ResultKey("", ".5f", "MMD² of two real sets (the floor)"),
    "energy": ResultKey("energy distance", ".5f", "energy distance", floor="energy_floor"),
    "energy_floor": ResultKey("", ".5f", "energy distance of two real sets"),
    "wasserstein1": ResultKey("W₁", ".5f", "exact Wasserstein-1", floor="wasserstein1_floor"),
    "wasserstein1_floor": ResultKey("", ".5f", "W₁ of two real sets"),
    "modes_captured": ResultKey("modes captured", "", "mixtures: modes with a sample nearby"),
    "n_modes": ResultKey("modes", "", "mixtures: number of modes"),
    "high_quality": ResultKey(
        "high quality",
        ".1%",
        "mixtures: share of samples within 3σ of a mode",
        floor="high_quality_ceiling",
        floor_label="the truth",
    ),
    "high_quality_ceiling": ResultKey("", ".1%", "high-quality share of exact draws of the truth"),
    "mode_width": ResultKey(
        "mode width",
        ".3f",
        "mixtures: spread of the high-quality samples about their mode / the mode's (1 = right)",
        floor="mode_width_truth",
        floor_label="the truth",
    ),
    "mode_width_truth": ResultKey("", ".3f", "mode width of exact draws of the truth"),
    "reverse_kl": ResultKey(
        "reverse KL",
        ".4f",
        "mixtures: KL(sample mode shares ‖ uniform)",
        floor="reverse_kl_floor",
        floor_label="the truth",
    ),
    "reverse_kl_floor": ResultKey("", ".4f", "reverse KL of exact draws of the truth"),
    "mean_log_density": ResultKey(
        "mean log-density",
        ".3f",
        "mixtures: mean log p_true of the samples",
        unit="nats",
        floor="mean_log_density_floor",
    ),
    "mean_log_density_floor": ResultKey("", ".3f", "mean log p_true of real draws", "nats"),
    "kl_to_truth": ResultKey(
        "KL(p ‖ q)",
        ".4f",
        "known truth p: E_p[log p − log q] on fresh draws of p; exact, or an upper bound from "
        "the IWAE estimate (kl_to_truth_kind)",
        unit="nats",
        stderr="kl_to_truth_stderr",
    ),
    "kl_to_truth_stderr": ResultKey("", ".4f", "standard error of kl_to_truth", "nats"),
    "kl_to_truth_kind": ResultKey("KL(p ‖ q) is", "", "exact, or upper bound (IWAE)"),
    "kl_to_truth_samples": ResultKey("KL(p ‖ q) draws of p", ",", "draws of p behind kl_to_truth"),
    "knn_kl": ResultKey(
        "KL(p ‖ q), k-NN",
        ".3f",
        "known truth p: k-nearest-neighbour estimate from samples (Wang et al. 2009; error "
        "about ±0.05 nats at 2,500 samples)",
        unit="nats",
        floor="knn_kl_floor",
        floor_label="the truth",
    ),
    "knn_kl_floor": ResultKey("", ".3f", "the k-NN estimate between two sets of truth draws"),
    "knn_samples": ResultKey("k-NN samples", ",", "samples per side of the k-NN estimate"),
    "frechet_distance": ResultKey(
        "Fréchet distance",
        ".3f",
        "images: Fréchet distance in digit-feature space",
        floor="frechet_distance_floor",
    ),
    "frechet_distance_floor": ResultKey("", ".3f", "Fréchet distance of two real halves"),
    "frechet_samples": ResultKey("Fréchet images", ",", "images per set"),
    "feature_accuracy": ResultKey(
        "feature net accuracy", ".1%", "held-out accuracy of the digit feature network"
    ),
}
"""Sample quality and fidelity to a known truth, for any generative model."""


def result_keys(model_cls: type | None = None) -> dict[str, ResultKey]:
    """Return every key an evaluation of a ``model_cls`` may give, in the order the command line
    prints them: the run's, the model's own (its ``evaluate_keys``), the encoder's and the
    likelihood's, then sample quality; without a class, the keys of every registered model."""
    if model_cls is None:
        from pushforward.models.registry import MODELS

        own: dict[str, Any] = {}
        for spec in MODELS.values():
            own.update(spec.cls.evaluate_keys)
    else:
        own = dict(model_cls.evaluate_keys)
    return {**RUN_RESULT_KEYS, **own, **ENCODER_KEYS, **LIKELIHOOD_KEYS, **QUALITY_KEYS}


RESULT_KEYS = result_keys()
"""Every key :func:`~pushforward.runs.evaluate_run` may give, for any registered model."""


def strict_json(value: Any) -> Any:
    """Return ``value`` with every non-finite float (NaN, ±inf) in it, nested in dicts, lists and
    tuples, replaced by None: what JSON can hold (``json.dumps(..., allow_nan=False)``). A NaN
    result means "not defined here" (the standard error of one row), which JSON says with null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def _value(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, int | float):
        return str(value)
    return format(value, fmt) if fmt else str(value)


def format_result(result: dict[str, Any], keys: dict[str, ResultKey] | None = None) -> str:
    """Return :func:`~pushforward.runs.evaluate_run`'s result as lines of text: one per key, in
    the order of ``keys`` (the model's :func:`result_keys`, default every model's; unknown keys
    last), each standard error and real-vs-real floor beside the value it belongs to."""
    keys = keys if keys is not None else RESULT_KEYS
    head = ("run", "model", "data", "rows", "n", "dim")
    lines = [f"{result.get('model')} on {result.get('data')} "
             f"({result.get('n', 0):,} rows × {result.get('dim')})"]  # fmt: skip
    companions = {k for key in keys.values() for k in (key.stderr, key.floor) if k}
    order = [k for k in keys if k in result] + [k for k in result if k not in keys]
    for key in order:
        if key in head or key in companions:
            continue
        spec = keys.get(key, ResultKey(key, ".4g", ""))
        text = _value(result[key], spec.fmt)
        if spec.stderr in result:
            text += f" ± {_value(result[spec.stderr], spec.fmt)}"
        if spec.unit:
            text += f" {spec.unit}"
        if spec.floor in result:
            text += f"  ({spec.floor_label}: {_value(result[spec.floor], spec.fmt)})"
        lines.append(f"  {spec.label:<24} {text}")
    return "\n".join(lines)
