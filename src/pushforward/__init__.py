"""pushforward: deep generative networks as pushforwards g#μ.

The public API, in one place::

    from pushforward import Pushforward, StandardNormal, VAE, fit_run, load_model, load_data

Models share one contract (:class:`Model`): ``sample``, ``decode``, and ``encode`` or an exact
``log_prob`` where they have one, declared by ``has_encoder`` and ``has_exact_density``. The
registry :data:`MODELS` names every model family ``pushforward fit`` knows.
"""

__version__ = "0.1.0"

from pushforward.autoencoder import Autoencoder, AutoencoderConfig
from pushforward.contract import Model, ModelConfig, ModelSpec
from pushforward.datasets import Dataset, GaussianMixture, load_data
from pushforward.discrete import two_dice_sum
from pushforward.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NoDensityError,
    PushforwardError,
    TrainingError,
)
from pushforward.flow import Flow, FlowConfig
from pushforward.gan import GAN, GANConfig
from pushforward.measures import (
    Pushforward,
    Restricted,
    StandardNormal,
    Uniform,
    example,
    inverse_cdf,
)
from pushforward.pca import PCA, PCAConfig, PPCAConfig, ProbabilisticPCA
from pushforward.registry import MODELS
from pushforward.runs import (
    RunConfig,
    decode_run,
    encode_run,
    evaluate_run,
    fit_run,
    load_model,
    sample_run,
)
from pushforward.train import TrainConfig, fit
from pushforward.vae import VAE, VAEConfig

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
