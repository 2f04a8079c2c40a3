"""PCA and probabilistic PCA: the linear encoders, decoders and pushforwards, in closed form.

PCA. Write the training matrix (centred by its mean, unless ``center=False``) as X = USVᵀ with
singular values s₁ ≥ s₂ ≥ … and V_k the first k columns of V. The encoder Z = X V_k and the
decoder X̂ = Z V_kᵀ give the best rank-k linear reconstruction (Eckart–Young): no rank-k
encoder/decoder pair has a smaller squared error than PCA's, which is exactly

    ‖X − X V_k V_kᵀ‖²_F = Σ_{i>k} s_i².

Probabilistic PCA (Tipping & Bishop, 1999). The linear pushforward g(z) = Wz + μ of z ~ N(0, I_k),
blurred by isotropic noise: x = Wz + μ + ε, ε ~ N(0, σ²I_d), so that x ~ N(μ, C), C = WWᵀ + σ²I.
Its maximum-likelihood fit is closed-form: μ the mean, S = (1/n) Σ (x−μ)(x−μ)ᵀ = U Λ Uᵀ,
σ² the mean of the d − k discarded eigenvalues, W = U_k (Λ_k − σ²I)^{1/2} (times any rotation R;
here R = I). The density and the posterior p(z | x) are exact.

Conventions: inputs are torch tensors (n, d) of a floating dtype; all arithmetic is float64,
learned attributes (ending in ``_``) are float64, and what is computed from an input comes back in
the input's dtype. Both classes follow the scikit-learn estimator contract, take their config
(:class:`PCAConfig`, :class:`PPCAConfig`) and save through :meth:`get_config` (the config, JSON)
and :meth:`get_state` (tensors, for safetensors).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from pushforward.core import (
    CheckpointError,
    ConfigError,
    DataError,
    Model,
    ModelConfig,
    ModelSpec,
    as_float64_rows,
    setting,
)
from pushforward.measures import LOG_2PI, StandardNormal, draw
from pushforward.nets import MAX_LATENT

__all__ = ["PCA", "PCAConfig", "PPCAConfig", "ProbabilisticPCA"]

F64 = torch.float64


def _training_rows(x: object, who: str) -> Tensor:
    """Return the training matrix as float64 (n, d), n ≥ 2 (variances divide by n − 1 or n)."""
    x64 = as_float64_rows(x, "X")
    if x64.shape[0] < 2:
        raise DataError(f"{who}.fit needs at least 2 rows in X, got shape {tuple(x64.shape)}")
    return x64


def _n_components(k: int, hi: int, rule: str, shape: torch.Size) -> int:
    """Return k, refusing more components than the data X of ``shape`` allow (``rule`` = hi)."""
    if k > hi:
        raise ConfigError(
            f"latent = {k} is not allowed for X of shape {tuple(shape)}; use at most "
            f"{rule} = {hi} components"
        )
    return k


def _principal_axes(xc: Tensor) -> tuple[Tensor, Tensor]:
    """Return s (r,) and Vᵀ (r, d) of xc = USVᵀ (r = min(n, d)), each row of Vᵀ sign-fixed."""
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    # scikit-learn's svd_flip on V: the largest-|value| entry of each axis is positive, so the same
    # data always give the same axes (first maximum on ties, as numpy's argmax)
    pivot = vh.abs().argmax(dim=1, keepdim=True)
    return s, (vh * torch.sign(vh.gather(1, pivot))).contiguous()


# --- settings ------------------------------------------------------------------------------------

_LATENT_HELP = "latent dimension k, the number of components"


def _translate(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Return a stored config with earlier releases' ``n_components`` read as ``latent``."""
    d = dict(stored)
    if "n_components" in d:
        if "latent" in d:  # from_config reports a config that cannot be read as a TypeError
            raise TypeError("n_components and latent both given; they are the same setting")
        d["latent"] = d.pop("n_components")
    return d


@dataclass
class PCAConfig(ModelConfig):
    """Settings of :class:`PCA` (``pushforward fit pca``)."""

    latent: int = setting(2, _LATENT_HELP, minimum=1, maximum=MAX_LATENT)
    center: bool = setting(True, "subtract the training mean before the SVD")

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> PCAConfig:
        """Return the config stored, earlier releases' ``n_components`` read as ``latent``."""
        return cls.from_dict(_translate(stored))

    def build(self, ds: Any) -> PCA:
        return PCA(self)


@dataclass
class PPCAConfig(ModelConfig):
    """Settings of :class:`ProbabilisticPCA` (``pushforward fit ppca``)."""

    latent: int = setting(2, _LATENT_HELP, minimum=1, maximum=MAX_LATENT)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> PPCAConfig:
        """Return the config stored, earlier releases' ``n_components`` read as ``latent``."""
        return cls.from_dict(_translate(stored))

    def build(self, ds: Any) -> ProbabilisticPCA:
        return ProbabilisticPCA(self)


class _LinearModel(Model, ABC):
    """Shared plumbing: fitted checks, input checks, aliases and the config/state round trip.

    In the model contract (:class:`~pushforward.contract.Model`): fitted in closed form, with an
    encoder; ``dim`` is d and ``latent`` is k = ``n_components``.
    """

    has_encoder = True
    trained = False

    config: Any
    n_features_: int
    n_samples_: int
    _state_keys: ClassVar[tuple[str, ...]]  # learned attributes saved by get_state, less the "_"

    @abstractmethod
    def _derive(self) -> None:
        """Set the attributes that follow from the saved ones (the same code after fit and load)."""

    @abstractmethod
    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return the shape each saved tensor must have, by name."""

    @property
    def dim(self) -> int:
        """d, the data dimension the model was fitted to."""
        self._check_fitted()
        return self.n_features_

    @property
    def latent(self) -> int:
        """k, the number of components."""
        return self.config.latent

    @property
    def n_components(self) -> int:
        """k, the number of components (scikit-learn's name)."""
        return self.config.latent

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> dict[str, Any]:
        """Return the contract's measures on x (n, d), computed in float64."""
        return super().evaluate(self._data(x), generator=generator, iwae_k=iwae_k)

    def to(self, device: torch.device | str) -> _LinearModel:
        """Move the fitted tensors to ``device`` (as ``nn.Module.to``); return ``self``."""
        vars(self).update({k: v.to(device) for k, v in vars(self).items() if isinstance(v, Tensor)})
        return self

    def _check_fitted(self) -> None:
        if "mean_" not in self.__dict__:
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(X) first")

    def _data(self, x: object, name: str = "X") -> Tensor:
        self._check_fitted()
        d = self.n_features_
        return as_float64_rows(x, name, dim=d, why=f" to match the fitted d = {d}")

    def _codes(self, z: object) -> Tensor:
        self._check_fitted()
        k = self.n_components
        return as_float64_rows(z, "Z", dim=k, why=f" to match n_components = {k}")

    @abstractmethod
    def fit(self, X: Tensor) -> _LinearModel:
        """Fit the model to X (n, d); return ``self``."""

    @abstractmethod
    def transform(self, X: Tensor) -> Tensor:
        """Return the codes (n, k) of X (n, d)."""

    @abstractmethod
    def inverse_transform(self, Z: Tensor) -> Tensor:
        """Return the points (n, d) of codes Z (n, k)."""

    def fit_transform(self, X: Tensor) -> Tensor:
        """Return the codes (n, k) of the training data X (n, d) after fitting on it."""
        return self.fit(X).transform(X)

    def encode(self, X: Tensor) -> Tensor:
        """Return the codes (n, k) of X (n, d); the same as :meth:`transform`."""
        return self.transform(X)

    def decode(self, Z: Tensor) -> Tensor:
        """Return the points (n, d) of codes Z (n, k); the same as :meth:`inverse_transform`."""
        return self.inverse_transform(Z)

    def decoder_layers(self) -> list[tuple]:
        """Return :meth:`decode` as a portable program: one linear map z ↦ W z + mean_."""
        self._check_fitted()
        return [("linear", self._decoder_matrix(), self.mean_)]

    @abstractmethod
    def _decoder_matrix(self) -> Tensor:
        """Return the (d, k) matrix W of the decoder z ↦ W z + mean_."""

    def get_state(self) -> dict[str, Tensor]:
        """Return the learned tensors by name (float64, ``n_samples`` int64), for safetensors."""
        self._check_fitted()
        state = {
            key: getattr(self, f"{key}_").detach().clone(memory_format=torch.contiguous_format)
            for key in self._state_keys
        }
        state["n_samples"] = torch.tensor(self.n_samples_, dtype=torch.int64)
        return state

    @classmethod
    def from_state(cls, config: Mapping[str, Any], state: Mapping[str, Tensor]) -> Any:
        """Return the fitted model that :meth:`get_config` and :meth:`get_state` describe.

        The round trip is bit-exact. A config or state that does not fit raises
        :class:`~pushforward.errors.CheckpointError` naming what is wrong."""
        model = cls.from_config(config)
        model.load_state(state, source=f"{cls.__name__} state")
        return model

    @classmethod
    def state_shapes(
        cls, config: Mapping[str, Any], data_shape: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        """Return the shape of each tensor of :meth:`get_state` for ``config`` fitted to data of
        shape (n, d)."""
        model = cls.from_config(config)
        model.n_samples_, model.n_features_ = int(data_shape[0]), int(data_shape[1])
        return {**model._state_shapes(), "n_samples": ()}

    def load_state(self, state: Mapping[str, Tensor], *, source: str = "state") -> None:
        """Set the fitted attributes from :meth:`get_state`'s tensors (bit-exact)."""
        cls = type(self)
        missing = [key for key in (*cls._state_keys, "n_samples", "mean") if key not in state]
        if missing:
            known = ", ".join(sorted(state))
            raise CheckpointError(
                f"{source} lacks {', '.join(dict.fromkeys(missing))}; it holds: {known}"
            )
        self.n_samples_ = int(state["n_samples"])
        self.n_features_ = state["mean"].numel()
        for key, shape in self._state_shapes().items():
            got = tuple(state[key].shape)
            if got != shape:
                raise CheckpointError(
                    f"{source}: {key!r} has shape {got}, expected {shape} "
                    f"for config {self.get_config()!r}"
                )
        for key in cls._state_keys:
            setattr(self, f"{key}_", state[key].detach().to(F64).clone())
        self._derive()


@final
class PCA(_LinearModel):
    """Principal component analysis: the best rank-k linear encoder/decoder pair, by SVD.

    Args:
        config: its :class:`PCAConfig`, kept as ``self.config``: ``latent`` = k, with
            1 ≤ k ≤ min(n, d) (the bound by the data checked in :meth:`fit`); ``center``:
            subtract the training mean first. ``center=False`` is the lecture's statement on
            the raw X = USVᵀ: encoder Z = X V_k, decoder X̂ = Z V_kᵀ, error Σ_{i>k} s_i².

    Learned, by :meth:`fit` on X (n, d), with X − 1·mean_ = USVᵀ:
        mean_ (d,): the training mean (zeros when ``center=False``).
        components_ (k, d): V_kᵀ, the top right-singular vectors as rows, each sign-fixed so its
            largest-|value| entry is positive (as scikit-learn's ``svd_flip``).
        singular_values_ (k,): s₁ ≥ … ≥ s_k.
        all_singular_values_ (min(n, d),): the whole spectrum, the discarded values included.
        explained_variance_ (k,): s_i² / (n − 1), as scikit-learn.
        explained_variance_ratio_ (k,): s_i² / Σ_j s_j².
        discarded_energy_: Σ_{i>k} s_i², the theorem's training error (a float).
        n_samples_, n_features_: n and d.
    """

    generative = False
    _state_keys = ("mean", "components", "all_singular_values")

    config_class = PCAConfig

    def __init__(self, config: PCAConfig) -> None:
        self.config = config

    def fit(self, X: Tensor) -> PCA:
        """Fit the principal axes of X (n, d) by SVD; return ``self``."""
        x = _training_rows(X, "PCA")
        n, d = x.shape
        k = _n_components(self.n_components, min(n, d), "min(n, d)", x.shape)
        mean = x.mean(0) if self.config.center else x.new_zeros(d)
        s, vh = _principal_axes(x - mean)
        self.n_samples_, self.n_features_ = n, d
        self.mean_ = mean  # (d,)
        self.components_ = vh[:k].clone()  # (k, d) = V_kᵀ
        self.all_singular_values_ = s  # (min(n, d),)
        self._derive()
        return self

    def _derive(self) -> None:
        k, s = self.n_components, self.all_singular_values_
        energy = s.square()
        self.singular_values_ = s[:k].clone()
        self.explained_variance_ = energy[:k] / (self.n_samples_ - 1)
        total = energy.sum()
        self.explained_variance_ratio_ = energy[:k] / total if total > 0 else energy[:k].clone()
        self.discarded_energy_ = float(energy[k:].sum())

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        k, d = self.n_components, self.n_features_
        return {
            "mean": (d,),
            "components": (k, d),
            "all_singular_values": (min(self.n_samples_, d),),
        }

    def transform(self, X: Tensor) -> Tensor:
        """Return the codes Z = (X − mean_) V_k, shape (n, k), for X (n, d)."""
        x = self._data(X)
        return ((x - self.mean_) @ self.components_.T).to(X.dtype)

    def inverse_transform(self, Z: Tensor) -> Tensor:
        """Return the reconstructions X̂ = Z V_kᵀ + mean_, shape (n, d), for codes Z (n, k)."""
        z = self._codes(Z)
        return (z @ self.components_ + self.mean_).to(Z.dtype)

    def _decoder_matrix(self) -> Tensor:
        return self.components_.T  # (d, k) = V_k

    def reconstruction_error(self, X: Tensor) -> float:
        """Return ‖X − decode(encode(X))‖²_F, the sum (not mean) of squares over all n·d entries.

        On the training data this equals :attr:`discarded_energy_` = Σ_{i>k} s_i², up to
        rounding; computed in float64 whatever X's dtype."""
        xc = self._data(X) - self.mean_
        residual = xc - (xc @ self.components_.T) @ self.components_
        return float(residual.square().sum())


@final
class ProbabilisticPCA(_LinearModel):
    """Probabilistic PCA x = Wz + μ + ε, z ~ N(0, I_k), ε ~ N(0, σ²I_d), fitted by max. likelihood.

    Args:
        config: its :class:`PPCAConfig`, kept as ``self.config``: ``latent`` = k, with
            1 ≤ k < d (σ² is the mean of the d − k discarded eigenvalues) and k ≤ n (checked in
            :meth:`fit`).

    Learned, by :meth:`fit` on X (n, d), with S = (1/n) Σ (x−μ)(x−μ)ᵀ = U Λ Uᵀ:
        mean_ (d,): μ.
        components_ (k, d): U_kᵀ, the top eigenvectors of S as rows, sign-fixed as in :class:`PCA`.
        explained_variance_ (k,): λ₁ ≥ … ≥ λ_k, the top eigenvalues of S (1/n, the MLE).
        noise_variance_ (): σ² = Σ_{i>k} λ_i / (d − k), a 0-d tensor.
        W_ (d, k): U_k (Λ_k − σ²I)^{1/2}.
        n_samples_, n_features_: n and d.
    """

    has_exact_density = True
    code_label = "posterior means E[z | x]"
    _state_keys = ("mean", "components", "explained_variance", "noise_variance")

    @property
    def latent_measure(self) -> StandardNormal:
        """μ = N(0, I_k), the prior of z."""
        return StandardNormal(self.n_components)

    config_class = PPCAConfig

    def __init__(self, config: PPCAConfig) -> None:
        self.config = config

    def fit(self, X: Tensor) -> ProbabilisticPCA:
        """Fit μ, W and σ² to X (n, d) by the closed-form maximum likelihood; return ``self``."""
        x = _training_rows(X, "ProbabilisticPCA")
        n, d = x.shape
        k = _n_components(self.n_components, min(n, d - 1), "min(n, d − 1)", x.shape)
        mean = x.mean(0)
        s, vh = _principal_axes(x - mean)
        lam = s.square() / n  # eigenvalues of S; the d − min(n, d) not listed are 0
        sigma2 = lam[k:].sum() / (d - k)
        if not sigma2 > d * torch.finfo(F64).eps * lam[0]:
            raise DataError(
                f"X of shape {(n, d)} lies in an affine subspace of dimension ≤ {k}, so the "
                f"noise variance σ² = {float(sigma2):.3g} is 0 and the density is degenerate; "
                f"use a smaller latent than {k}"
            )
        self.n_samples_, self.n_features_ = n, d
        self.mean_ = mean  # (d,)
        self.components_ = vh[:k].clone()  # (k, d) = U_kᵀ
        self.explained_variance_ = lam[:k].clone()  # (k,)
        self.noise_variance_ = sigma2  # ()
        self._derive()
        return self

    def _derive(self) -> None:
        scale = (self.explained_variance_ - self.noise_variance_).clamp_min(0).sqrt()
        self.W_ = self.components_.T * scale  # (d, k) = U_k (Λ_k − σ²I)^{1/2}

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        k, d = self.n_components, self.n_features_
        return {
            "mean": (d,),
            "components": (k, d),
            "explained_variance": (k,),
            "noise_variance": (),
        }

    def covariance(self) -> Tensor:
        """Return the model covariance C = WWᵀ + σ²I, shape (d, d), float64."""
        self._check_fitted()
        eye = torch.eye(self.n_features_, dtype=F64, device=self.W_.device)
        return self.W_ @ self.W_.T + self.noise_variance_ * eye

    def _posterior_precision(self) -> Tensor:
        """Return the Cholesky factor (k, k) of M = WᵀW + σ²I."""
        eye = torch.eye(self.n_components, dtype=F64, device=self.W_.device)
        return torch.linalg.cholesky(self.W_.T @ self.W_ + self.noise_variance_ * eye)

    def log_prob(self, X: Tensor) -> Tensor:
        """Return log N(x; μ, C) in nats for each row of X (n, d), shape (n,)."""
        return self._log_prob(self._data(X)).to(X.dtype)

    def _log_prob(self, x: Tensor) -> Tensor:
        chol = torch.linalg.cholesky(self.covariance())  # C = LLᵀ
        white = torch.linalg.solve_triangular(chol, (x - self.mean_).T, upper=False)  # (d, n)
        log_det = 2 * chol.diagonal().log().sum()
        quad = white.square().sum(0)
        return -0.5 * (self.n_features_ * LOG_2PI + log_det + quad)

    def score(self, X: Tensor) -> float:
        """Return the mean log-likelihood (nats per example) of X (n, d), as scikit-learn."""
        return float(self._log_prob(self._data(X)).mean())

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = F64
    ) -> Tensor:
        """Return n draws x = Wz + μ + ε, shape (n, d): z ~ N(0, I_k) pushed forward, plus noise.

        z (n, k) then ε ~ N(0, σ²I_d) (n, d), both from ``generator``; drawn in float64 whatever
        ``dtype``, so the draws do not depend on it.
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"n must be a non-negative integer, got {n!r}")
        opts = {"generator": generator, "dtype": F64, "device": self.W_.device}
        z = draw(torch.randn, n, self.n_components, **opts)  # (n, k)
        eps = draw(torch.randn, n, self.n_features_, **opts) * self.noise_variance_.sqrt()  # (n, d)
        return (z @ self.W_.T + self.mean_ + eps).to(dtype)

    def posterior(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Return the exact posterior p(z | x) = N(M⁻¹Wᵀ(x − μ), σ²M⁻¹), M = WᵀW + σ²I.

        Returns the means (n, k), one per row of X (n, d), and the covariance (k, k) shared by
        all rows, in X's dtype.
        """
        x = self._data(X)
        chol = self._posterior_precision()
        mean = torch.cholesky_solve(self.W_.T @ (x - self.mean_).T, chol).T  # (n, k)
        cov = self.noise_variance_ * torch.cholesky_inverse(chol)  # (k, k)
        return mean.to(X.dtype), cov.to(X.dtype)

    def transform(self, X: Tensor) -> Tensor:
        """Return the posterior means E[z | x] = M⁻¹Wᵀ(x − μ), shape (n, k), for X (n, d)."""
        return self.posterior(X)[0]

    def inverse_transform(self, Z: Tensor) -> Tensor:
        """Return the decoded means g(z) = Wz + μ, shape (n, d), for codes Z (n, k)."""
        z = self._codes(Z)
        return (z @ self.W_.T + self.mean_).to(Z.dtype)

    def _decoder_matrix(self) -> Tensor:
        return self.W_  # (d, k)


PCA_SPEC = ModelSpec(PCA, PCAConfig, "PCA, the optimal linear encoder (closed form)")
PPCA_SPEC = ModelSpec(
    ProbabilisticPCA, PPCAConfig, "probabilistic PCA, a linear pushforward with exact density"
)
