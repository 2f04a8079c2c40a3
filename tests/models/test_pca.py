"""PCA and probabilistic PCA against numpy, scipy, scikit-learn and the Eckart–Young theorem."""

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import MultivariateNormal

from pushforward.core import CheckpointError, ConfigError, DataError
from pushforward.models.pca import PCA, PCAConfig, PPCAConfig, ProbabilisticPCA


def data(n: int = 60, d: int = 8, *, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Correlated Gaussian rows with an offset, so centring matters and the spectrum is spread."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.linspace(3, 0.3, d).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + torch.arange(d) + 1.0
    return x.to(dtype)


def numpy_svd(x: torch.Tensor, center: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return mean (d,), s (r,) and Vᵀ (r, d) of the (centred) matrix, straight from numpy."""
    a = x.double().numpy()
    mean = a.mean(0) if center else np.zeros(a.shape[1])
    _, s, vt = np.linalg.svd(a - mean, full_matrices=False)
    return mean, s, vt


def align(rows: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Return ``rows`` with each row's sign flipped to agree with the same row of ``ref``."""
    return rows * np.sign(np.sum(rows * ref, axis=1, keepdims=True))


# --- PCA: the decomposition ----------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize(("n", "d", "k"), [(60, 8, 3), (10, 50, 4)])
def test_pca_matches_numpy_svd(center, n, d, k):
    x = data(n, d, seed=1)
    pca = PCA(PCAConfig(latent=k, center=center)).fit(x)
    mean, s, vt = numpy_svd(x, center)
    np.testing.assert_allclose(pca.mean_.numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(pca.all_singular_values_.numpy(), s, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pca.singular_values_.numpy(), s[:k], rtol=1e-10)
    comps = pca.components_.numpy()
    np.testing.assert_allclose(align(comps, vt[:k]), vt[:k], atol=1e-8)
    np.testing.assert_allclose(pca.explained_variance_.numpy(), s[:k] ** 2 / (n - 1), rtol=1e-10)
    np.testing.assert_allclose(
        pca.explained_variance_ratio_.numpy(), s[:k] ** 2 / np.sum(s**2), rtol=1e-10
    )
    assert pca.components_.shape == (k, d) and pca.mean_.shape == (d,)
    assert (pca.n_samples_, pca.n_features_) == (n, d)
    # the sign rule: the largest-|value| entry of each axis is positive
    assert np.all(comps[np.arange(k), np.abs(comps).argmax(1)] > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pca_matches_sklearn_signs_included(dtype):
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = data(80, 7, seed=2, dtype=dtype)
    ours = PCA(PCAConfig(latent=3)).fit(x)
    theirs = decomposition.PCA(3, svd_solver="full").fit(x.double().numpy())
    comps = ours.components_.numpy()
    sklearn_version = tuple(
        int(p) for p in pytest.importorskip("sklearn").__version__.split(".")[:2]
    )
    if sklearn_version < (1, 5):  # before 1.5 its full solver fixed signs on U, not on V
        comps = align(comps, theirs.components_)
    np.testing.assert_allclose(comps, theirs.components_, atol=1e-5)
    np.testing.assert_allclose(ours.singular_values_.numpy(), theirs.singular_values_, rtol=1e-5)
    np.testing.assert_allclose(
        ours.explained_variance_.numpy(), theirs.explained_variance_, rtol=1e-5
    )
    np.testing.assert_allclose(
        ours.explained_variance_ratio_.numpy(), theirs.explained_variance_ratio_, rtol=1e-5
    )
    z = ours.transform(x)
    assert z.dtype == dtype
    want = theirs.transform(x.double().numpy())
    np.testing.assert_allclose(align(z.double().numpy().T, want.T).T, want, atol=1e-4)


# --- PCA: the theorem ----------------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_training_error_is_the_sum_of_discarded_squared_singular_values(center, k):
    x = data(50, 6, seed=3)
    pca = PCA(PCAConfig(latent=k, center=center)).fit(x)
    _, s, _ = numpy_svd(x, center)
    want = float(np.sum(s[k:] ** 2))
    assert pca.discarded_energy_ == pytest.approx(want, rel=1e-10)
    assert pca.reconstruction_error(x) == pytest.approx(want, rel=1e-6)
    # the documented meaning: a sum, not a mean, of squares over all entries
    residual = x - pca.inverse_transform(pca.transform(x))
    assert pca.reconstruction_error(x) == pytest.approx(float(residual.square().sum()), rel=1e-10)


def test_uncentred_pca_is_the_lecture_encoder_and_decoder():
    x = data(40, 7, seed=4)
    k = 3
    pca = PCA(PCAConfig(latent=k, center=False)).fit(x)
    _, _, vt = numpy_svd(x, center=False)
    vk = vt[:k].T  # (d, k) = V_k
    a = x.numpy()
    assert torch.all(pca.mean_ == 0)
    z = pca.transform(x).numpy()
    np.testing.assert_allclose(align(z.T, (a @ vk).T).T, a @ vk, atol=1e-10)  # Z = X V_k
    np.testing.assert_allclose(pca.decode(pca.encode(x)).numpy(), a @ vk @ vk.T, atol=1e-10)


@pytest.mark.parametrize("center", [True, False])
def test_no_rank_k_linear_pair_beats_pca(center):
    x = data(40, 6, seed=5)
    x = x / x.std()
    k = 2
    best = PCA(PCAConfig(latent=k, center=center)).fit(x).reconstruction_error(x)
    a = x.numpy()
    rng = np.random.default_rng(6)

    # centred PCA competes with affine pairs x ↦ (x − b) A B + b, uncentred with linear ones
    def error(enc, dec, bias):
        return np.square((a - bias) @ enc @ dec + bias - a).sum(axis=(-2, -1))

    m = 500
    enc = rng.standard_normal((m, 6, k))
    dec = rng.standard_normal((m, k, 6))
    bias = rng.standard_normal((m, 1, 6)) if center else np.zeros((m, 1, 6))
    assert np.all(error(enc, dec, bias) >= best)
    # the least-squares decoder for each encoder is a harder rival than a random one
    codes = (a - bias) @ enc
    dec = np.linalg.solve(codes.transpose(0, 2, 1) @ codes, codes.transpose(0, 2, 1) @ (a - bias))
    assert np.all(error(enc, dec, bias) >= best * (1 - 1e-10))

    # gradient descent on the pair (and the bias) gets close to PCA's error, never below it
    enc, dec, bias = 0.1 * rng.standard_normal((6, k)), 0.1 * rng.standard_normal((k, 6)), 0.0
    start = error(enc, dec, bias)
    for _ in range(500):
        y = a - bias
        mix = enc @ dec - np.eye(6)
        res = y @ mix  # the residual x̂ − x, (n, d)
        grad_enc, grad_dec = 2 * y.T @ res @ dec.T, 2 * (y @ enc).T @ res
        grad_bias = -2 * mix @ res.sum(0)
        enc, dec = enc - 0.1 * grad_enc / len(a), dec - 0.1 * grad_dec / len(a)
        if center:
            bias = bias - 0.1 * grad_bias / len(a)
    trained = error(enc, dec, bias)
    assert trained < 0.2 * start
    assert best * (1 - 1e-10) <= trained < 1.01 * best


# --- PCA: round trips and shapes -----------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize(("n", "d"), [(30, 5), (6, 20)])
@pytest.mark.parametrize("center", [True, False])
def test_full_rank_round_trip_is_the_identity(dtype, tol, n, d, center):
    x = data(n, d, seed=7, dtype=dtype) / 10
    pca = PCA(PCAConfig(latent=min(n, d), center=center)).fit(x)
    back = pca.inverse_transform(pca.transform(x))
    assert back.dtype == dtype and back.shape == (n, d)
    torch.testing.assert_close(back, x, rtol=0, atol=tol)


@pytest.mark.parametrize("cls", [PCA, ProbabilisticPCA])
def test_fit_transform_equals_fit_then_transform(cls):
    x = data(10, 50, seed=8)  # n < d
    z = cls(cls.config_class(latent=4)).fit_transform(x)
    assert z.shape == (10, 4)
    torch.testing.assert_close(
        z, cls(cls.config_class(latent=4)).fit(x).transform(x), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        cls(cls.config_class(latent=4)).fit(x).encode(x), z, rtol=0, atol=1e-12
    )


# --- probabilistic PCA ---------------------------------------------------------------------------


def numpy_ppca(x: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Return μ, WWᵀ and σ² of the closed-form ML fit, from numpy's eigh of S = (1/n) XcᵀXc."""
    a = x.double().numpy()
    mean = a.mean(0)
    xc = a - mean
    lam, u = np.linalg.eigh(xc.T @ xc / len(a))
    lam, u = lam[::-1], u[:, ::-1]
    sigma2 = lam[k:].mean()
    uk = u[:, :k]
    return mean, uk @ np.diag(lam[:k] - sigma2) @ uk.T, float(sigma2)


@pytest.mark.parametrize(("n", "d", "k"), [(200, 6, 2), (12, 30, 3)])
def test_ppca_fit_is_the_closed_form_maximum_likelihood(n, d, k):
    x = data(n, d, seed=9)
    ppca = ProbabilisticPCA(PPCAConfig(latent=k)).fit(x)
    mean, wwt, sigma2 = numpy_ppca(x, k)
    np.testing.assert_allclose(ppca.mean_.numpy(), mean, atol=1e-12)
    assert float(ppca.noise_variance_) == pytest.approx(sigma2, rel=1e-9)
    w = ppca.W_.numpy()
    assert w.shape == (d, k)
    np.testing.assert_allclose(w @ w.T, wwt, atol=1e-9)
    np.testing.assert_allclose(ppca.covariance().numpy(), wwt + sigma2 * np.eye(d), atol=1e-9)
    # the columns of W are orthogonal (R = I), with squared norms λ_i − σ²
    np.testing.assert_allclose(
        w.T @ w, np.diag(ppca.explained_variance_.numpy() - sigma2), atol=1e-9
    )


def test_ppca_log_prob_matches_scipy_and_torch():
    x = data(100, 5, seed=10)
    ppca = ProbabilisticPCA(PPCAConfig(latent=2)).fit(x)
    w, mu, s2 = ppca.W_.numpy(), ppca.mean_.numpy(), float(ppca.noise_variance_)
    cov = w @ w.T + s2 * np.eye(5)
    new = data(20, 5, seed=11)
    got = ppca.log_prob(new)
    assert got.shape == (20,) and got.dtype == torch.float64
    want = stats.multivariate_normal(mu, cov).logpdf(new.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    mvn = MultivariateNormal(torch.from_numpy(mu), covariance_matrix=torch.from_numpy(cov))
    torch.testing.assert_close(got, mvn.log_prob(new), rtol=1e-10, atol=1e-10)
    assert ppca.score(new) == pytest.approx(float(np.mean(want)), rel=1e-10)
    got32 = ppca.log_prob(new.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), want, rtol=1e-5)


def test_ppca_maximum_likelihood_beats_perturbed_parameters():
    x = data(150, 6, seed=12)
    ppca = ProbabilisticPCA(PPCAConfig(latent=2)).fit(x)
    best = ppca.score(x)
    a = x.numpy()
    w, mu, s2 = ppca.W_.numpy(), ppca.mean_.numpy(), float(ppca.noise_variance_)
    rng = np.random.default_rng(13)

    def score(w: np.ndarray, s2: float, mu: np.ndarray = mu) -> float:
        return float(stats.multivariate_normal(mu, w @ w.T + s2 * np.eye(6)).logpdf(a).mean())

    assert score(w, s2) == pytest.approx(best, rel=1e-10)
    # W is only defined up to a rotation: rotating it keeps the likelihood
    rot = np.linalg.qr(rng.standard_normal((2, 2)))[0]
    assert score(w @ rot, s2) == pytest.approx(best, rel=1e-10)
    for scale in (1e-3, 1e-2, 1e-1):
        for _ in range(10):
            assert score(w + scale * rng.standard_normal(w.shape), s2) < best
            assert score(w, s2 * np.exp(scale * rng.standard_normal())) < best
            assert score(w, s2, mu + scale * rng.standard_normal(6)) < best


def test_ppca_sample_has_n_rows_and_the_model_covariance():
    ppca = ProbabilisticPCA(PPCAConfig(latent=2)).fit(data(100, 4, seed=14) / 3)
    assert ppca.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 4)
    assert ppca.sample(0).shape == (0, 4)
    assert ppca.sample(3, dtype=torch.float32).dtype == torch.float32
    one = ppca.sample(50, generator=torch.Generator().manual_seed(1))
    two = ppca.sample(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, two)
    n = 200_000
    draws = ppca.sample(n, generator=torch.Generator().manual_seed(2))
    assert draws.shape == (n, 4) and draws.dtype == torch.float64
    cov = ppca.covariance()
    scale = cov.diagonal().max()
    torch.testing.assert_close(draws.mean(0), ppca.mean_, rtol=0, atol=0.02 * scale.sqrt())
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0, atol=0.02 * scale)


def test_ppca_posterior_is_gaussian_conditioning_of_the_joint():
    x = data(80, 5, seed=15)
    ppca = ProbabilisticPCA(PPCAConfig(latent=2)).fit(x)
    w, mu, s2 = ppca.W_.numpy(), ppca.mean_.numpy(), float(ppca.noise_variance_)
    # joint of (z, x): Σ_zz = I, Σ_zx = Wᵀ, Σ_xx = WWᵀ + σ²I; condition on x
    sxx = w @ w.T + s2 * np.eye(5)
    gain = np.linalg.solve(sxx, w).T  # Σ_zx Σ_xx⁻¹, (k, d)
    new = data(9, 5, seed=16)
    want_mean = (new.numpy() - mu) @ gain.T
    want_cov = np.eye(2) - gain @ w
    mean, cov = ppca.posterior(new)
    assert mean.shape == (9, 2) and cov.shape == (2, 2)
    np.testing.assert_allclose(mean.numpy(), want_mean, atol=1e-10)
    np.testing.assert_allclose(cov.numpy(), want_cov, atol=1e-12)
    torch.testing.assert_close(ppca.transform(new), mean, rtol=0, atol=0)
    z = torch.from_numpy(want_mean)
    np.testing.assert_allclose(ppca.inverse_transform(z).numpy(), want_mean @ w.T + mu, atol=1e-12)


def test_ppca_degenerate_data_is_refused():
    x = (
        data(30, 2, seed=17)
        @ torch.randn(2, 5, generator=torch.Generator().manual_seed(0)).double()
    )
    with pytest.raises(DataError, match="noise variance"):
        ProbabilisticPCA(PPCAConfig(latent=2)).fit(x)


# --- bad input -----------------------------------------------------------------------------------


X = data(10, 4, seed=18)


def with_nan(x: torch.Tensor, row: int, col: int) -> torch.Tensor:
    x = x.clone()
    x[row, col] = float("nan")
    return x


def fitted(cls=PCA):
    return cls(cls.config_class(latent=2)).fit(X)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: PCA(PCAConfig(latent=0)).fit(X),
            ConfigError,
            r"latent = 0 is not allowed; use an integer ≥ 1",
        ),
        (
            lambda: PCA(PCAConfig(latent=5)).fit(X),
            ConfigError,
            r"latent = 5 .*\(10, 4\).*min\(n, d\) = 4",
        ),
        (lambda: PCA(PCAConfig(latent=2.0)).fit(X), ConfigError, r"latent = 2\.0 is not allowed"),
        (
            lambda: PCA(PCAConfig(latent=2, center="yes")),
            ConfigError,
            "center = 'yes' is not allowed; use true",
        ),
        (
            lambda: ProbabilisticPCA(PPCAConfig(latent=4)).fit(X),
            ConfigError,
            r"latent = 4 .*d − 1\) = 3",
        ),
        (
            lambda: ProbabilisticPCA(PPCAConfig(latent=0)).fit(X),
            ConfigError,
            r"latent = 0 is not allowed",
        ),
        (
            lambda: PCA(PCAConfig(latent=2)).fit(X[0]),
            DataError,
            r"X must have shape \(n, d\), got \(4,\)",
        ),
        (lambda: PCA(PCAConfig(latent=1)).fit(X[:1]), DataError, r"at least 2 rows.*\(1, 4\)"),
        (lambda: PCA(PCAConfig(latent=2)).fit(X.long()), DataError, "floating-point.*int64"),
        (lambda: PCA(PCAConfig(latent=2)).fit(X.numpy()), DataError, "torch.Tensor"),
        (
            lambda: PCA(PCAConfig(latent=2)).fit(with_nan(X, 3, 1)),
            DataError,
            r"1 NaN .*row 3, column 1",
        ),
        (lambda: fitted().transform(X[:, :3]), DataError, r"\(n, 4\).*d = 4, got \(10, 3\)"),
        (lambda: fitted().transform(X[0]), DataError, r"\(n, 4\).*got \(4,\)"),
        (lambda: fitted().inverse_transform(X), DataError, r"Z .*n_components = 2, got \(10, 4\)"),
        (lambda: fitted(ProbabilisticPCA).log_prob(X[:, :2]), DataError, r"d = 4, got \(10, 2\)"),
        (lambda: fitted(ProbabilisticPCA).sample(-1), ConfigError, "n must be.*got -1"),
        (
            lambda: PCA(PCAConfig(latent=2)).transform(X),
            ConfigError,
            r"PCA is not fitted; call fit\(X\) first",
        ),
        (lambda: PCA(PCAConfig(latent=2)).get_state(), ConfigError, "not fitted"),
        (
            lambda: ProbabilisticPCA(PPCAConfig(latent=2)).sample(3),
            ConfigError,
            "ProbabilisticPCA is not fitted",
        ),
        (lambda: ProbabilisticPCA(PPCAConfig(latent=2)).posterior(X), ConfigError, "not fitted"),
    ],
)
def test_bad_input_is_refused_with_names(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- saving --------------------------------------------------------------------------------------


def assert_same_model(a, b) -> None:
    learned = [key for key in vars(a) if key.endswith("_")]
    assert learned and sorted(learned) == sorted(key for key in vars(b) if key.endswith("_"))
    for key in learned:
        va, vb = getattr(a, key), getattr(b, key)
        if isinstance(va, torch.Tensor):
            assert va.dtype == vb.dtype and torch.equal(va, vb), key
        else:
            assert va == vb, key


@pytest.mark.parametrize(
    "model",
    [
        PCA(PCAConfig(latent=3)),
        PCA(PCAConfig(latent=2, center=False)),
        ProbabilisticPCA(PPCAConfig(latent=3)),
    ],
    ids=["pca", "uncentred", "ppca"],
)
def test_config_and_state_round_trip_bit_exactly(model):
    x = data(40, 6, seed=19, dtype=torch.float32)
    config = json.loads(json.dumps(model.get_config()))  # JSON-able before and after fit
    model.fit(x)
    assert json.loads(json.dumps(model.get_config())) == config
    state = model.get_state()
    st = pytest.importorskip("safetensors.torch")
    state = st.load(st.save(state))
    again = type(model).from_state(config, state)
    assert_same_model(model, again)
    assert torch.equal(model.transform(x), again.transform(x))
    if isinstance(model, ProbabilisticPCA):
        assert torch.equal(model.log_prob(x), again.log_prob(x))


def test_from_state_refuses_a_state_that_does_not_fit():
    pca = PCA(PCAConfig(latent=2)).fit(X)
    state = pca.get_state()
    with pytest.raises(CheckpointError, match="lacks components"):
        PCA.from_state(pca.get_config(), {k: v for k, v in state.items() if k != "components"})
    with pytest.raises(
        CheckpointError, match=r"'components' has shape \(2, 4\), expected \(3, 4\)"
    ):
        PCA.from_state({"n_components": 3}, state)
    with pytest.raises(CheckpointError, match="does not describe a PCA"):
        PCA.from_state({"n_components": 2, "latent": 3}, state)


def test_configs_read_the_n_components_that_earlier_releases_stored():
    assert PCAConfig.from_stored({"center": False, "n_components": 1}) == PCAConfig(1, False)
    assert PPCAConfig.from_stored({"n_components": 3}) == PPCAConfig(latent=3)
    pca = PCA(PCAConfig(latent=2, center=False))
    assert pca.get_config() == {"latent": 2, "center": False} and pca.n_components == 2
    assert repr(pca) == "PCA(PCAConfig(latent=2, center=False))"
