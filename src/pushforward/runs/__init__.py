"""Run folders: the run config, fitting a run, loading it back, figures, evaluation."""

from pushforward.runs.plots import (
    HISTORY_PLOTS,
    density_heatmap,
    density_histogram,
    error_vs_k,
    gan_curves,
    gif_bytes,
    image_grid,
    loss_curves,
    pmf_bars,
    scatter_2d,
)
from pushforward.runs.run import (
    MAX_MODEL_BYTES,
    MODELS,
    RESULT_KEYS,
    ResultKey,
    RunConfig,
    decode_run,
    encode_run,
    evaluate_run,
    fit_run,
    load_model,
    load_run_config,
    plan_run,
    sample_run,
)

__all__ = ["HISTORY_PLOTS", "MAX_MODEL_BYTES", "MODELS", "RESULT_KEYS", "ResultKey", "RunConfig", "decode_run", "density_heatmap", "density_histogram", "encode_run", "error_vs_k", "evaluate_run", "fit_run", "gan_curves", "gif_bytes", "image_grid", "load_model", "load_run_config", "loss_curves", "plan_run", "pmf_bars", "sample_run", "scatter_2d"]
