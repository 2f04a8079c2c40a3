"""Metrics of samples and models: distances, sample quality, fidelity to a known truth, digit
features."""

from pushforward.metrics.distances import (
    ModeMetrics,
    energy_distance,
    frechet_distance,
    frechet_distance_from_samples,
    ks_critical_value,
    ks_distance,
    mean_log_density,
    mmd2_unbiased,
    mode_metrics,
    wasserstein_distance,
)
from pushforward.metrics.features import (
    DigitClassifier,
    FeatureNet,
    digit_features,
    feature_cache_dir,
)
from pushforward.metrics.fidelity import (
    BOUND_KL_SAMPLES,
    EXACT,
    IWAE_UPPER,
    KL_SAMPLES,
    KNN_SAMPLES,
    KLEstimate,
    kl_to_truth,
    knn_kl,
    truth_fidelity,
)
from pushforward.metrics.quality import (
    MAX_POINTS,
    MODE_SAMPLES,
    image_quality,
    point_quality,
    sample_quality,
)

__all__ = [
    "BOUND_KL_SAMPLES",
    "EXACT",
    "IWAE_UPPER",
    "KL_SAMPLES",
    "KNN_SAMPLES",
    "MAX_POINTS",
    "MODE_SAMPLES",
    "DigitClassifier",
    "FeatureNet",
    "KLEstimate",
    "ModeMetrics",
    "digit_features",
    "energy_distance",
    "feature_cache_dir",
    "frechet_distance",
    "frechet_distance_from_samples",
    "image_quality",
    "kl_to_truth",
    "knn_kl",
    "ks_critical_value",
    "ks_distance",
    "mean_log_density",
    "mmd2_unbiased",
    "mode_metrics",
    "point_quality",
    "sample_quality",
    "truth_fidelity",
    "wasserstein_distance",
]
