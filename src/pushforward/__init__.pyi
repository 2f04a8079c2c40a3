"""The names :mod:`pushforward` exports, imported on first use (``__init__.py``)."""

from .core import (
    CheckpointError,
    ConfigError,
    DataError,
    Model,
    ModelConfig,
    ModelSpec,
    NoDensityError,
    PushforwardError,
    TrainingError,
)
from .core.version import __version__
from .data import Dataset, GaussianMixture, load_data
from .measures import (
    Pushforward,
    Restricted,
    StandardNormal,
    Uniform,
    example,
    inverse_cdf,
    two_dice_sum,
)
from .models.autoencoder import Autoencoder, AutoencoderConfig
from .models.flow import Flow, FlowConfig
from .models.gan import GAN, GANConfig
from .models.pca import PCA, PCAConfig, PPCAConfig, ProbabilisticPCA
from .models.registry import MODELS
from .models.vae import VAE, VAEConfig
from .runs import (
    RunConfig,
    decode_run,
    encode_run,
    evaluate_run,
    fit_run,
    load_model,
    sample_run,
)
from .train import TrainConfig, fit

__all__ = [
    "GAN",
    "MODELS",
    "PCA",
    "VAE",
    "Autoencoder",
    "AutoencoderConfig",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Dataset",
    "Flow",
    "FlowConfig",
    "GANConfig",
    "GaussianMixture",
    "Model",
    "ModelConfig",
    "ModelSpec",
    "NoDensityError",
    "PCAConfig",
    "PPCAConfig",
    "ProbabilisticPCA",
    "Pushforward",
    "PushforwardError",
    "Restricted",
    "RunConfig",
    "StandardNormal",
    "TrainConfig",
    "TrainingError",
    "Uniform",
    "VAEConfig",
    "__version__",
    "decode_run",
    "encode_run",
    "evaluate_run",
    "example",
    "fit",
    "fit_run",
    "inverse_cdf",
    "load_data",
    "load_model",
    "sample_run",
    "two_dice_sum",
]
