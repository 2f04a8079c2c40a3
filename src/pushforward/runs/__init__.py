"""Run folders: the run config, fitting a run, the folder on disk, figures, evaluation."""

from pushforward.models.registry import MODELS
from pushforward.runs.config import RUN_KEYS, RunConfig, read_settings_file
from pushforward.runs.evaluate import decode_run, encode_run, evaluate_run, sample_run
from pushforward.runs.figures import codes, manifold, write_figures
from pushforward.runs.fit import fit_run, plan_run
from pushforward.runs.folder import (
    MAX_MODEL_BYTES,
    READABLE_FORMATS,
    RUN_FORMAT,
    load_model,
    load_run_config,
    run_record,
    save_model,
)
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
from pushforward.runs.results import (
    QUALITY_KEYS,
    RESULT_KEYS,
    RUN_RESULT_KEYS,
    format_result,
    result_keys,
    strict_json,
)
from pushforward.runs.seeds import MAX_SEEDS, fit_seed_runs, seed_folder

__all__ = [
    "HISTORY_PLOTS",
    "MAX_MODEL_BYTES",
    "MAX_SEEDS",
    "MODELS",
    "QUALITY_KEYS",
    "READABLE_FORMATS",
    "RESULT_KEYS",
    "RUN_FORMAT",
    "RUN_KEYS",
    "RUN_RESULT_KEYS",
    "RunConfig",
    "codes",
    "decode_run",
    "density_heatmap",
    "density_histogram",
    "encode_run",
    "error_vs_k",
    "evaluate_run",
    "fit_run",
    "fit_seed_runs",
    "format_result",
    "gan_curves",
    "gif_bytes",
    "image_grid",
    "load_model",
    "load_run_config",
    "loss_curves",
    "manifold",
    "plan_run",
    "pmf_bars",
    "read_settings_file",
    "result_keys",
    "run_record",
    "sample_run",
    "save_model",
    "scatter_2d",
    "seed_folder",
    "strict_json",
    "write_figures",
]
