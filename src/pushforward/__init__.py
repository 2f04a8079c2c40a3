"""pushforward: deep generative networks as pushforwards g#μ.

The public API, in one place::

    from pushforward import Pushforward, StandardNormal, VAE, fit_run, load_model, load_data

Models share one contract (:class:`Model`): ``sample``, ``decode``, and ``encode`` or an exact
``log_prob`` where they have one, declared by ``has_encoder`` and ``has_exact_density``. The
registry :data:`MODELS` names every model family ``pushforward fit`` knows.
"""

from pushforward.core import (
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
from pushforward.core.version import __version__
from pushforward.data import Dataset, GaussianMixture, load_data
from pushforward.measures import (
    Pushforward,
    Restricted,
    StandardNormal,
    Uniform,
    example,
    inverse_cdf,
    two_dice_sum,
)
from pushforward.models.autoencoder import Autoencoder, AutoencoderConfig
from pushforward.models.flow import Flow, FlowConfig
from pushforward.models.gan import GAN, GANConfig
from pushforward.models.pca import PCA, PCAConfig, PPCAConfig, ProbabilisticPCA
from pushforward.models.registry import MODELS
from pushforward.models.vae import VAE, VAEConfig
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
