"""Datasets: exact mixture densities against independent references, seeded sampling, and one
clear DataError per kind of bad input."""

import gzip
import json
import math
import struct
import sys

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from pushforward import datasets
from pushforward.datasets import (
    BUILTIN_DATA,
    Dataset,
    GaussianMixture,
    download_mnist,
    find_mnist_folder,
    grid25,
    load_array,
    load_data,
    load_digits,
    load_mnist,
    mixture_from_spec,
    moons,
    read_idx,
    ring8,
    train_test_split,
)
from pushforward.errors import ConfigError, DataError

MNIST = find_mnist_folder()
needs_mnist = pytest.mark.skipif(MNIST is None, reason="MNIST test-set files not found")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def torch_mixture(m: GaussianMixture) -> MixtureSameFamily:
    """The same mixture built by torch.distributions, an independent reference."""
    return MixtureSameFamily(
        Categorical(probs=m.weights), MultivariateNormal(m.means, covariance_matrix=m.covariances)
    )


def random_mixture(k: int = 3, d: int = 4, seed: int = 0) -> GaussianMixture:
    g = gen(seed)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.mT + 0.5 * torch.eye(d, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return GaussianMixture(weights, 3 * torch.randn(k, d, generator=g, dtype=torch.float64), cov)


def grid_mass(m: GaussianMixture, half_width: float, step: float) -> float:
    """∫ p over the square [−half_width, half_width]² by the midpoint rule."""
    ticks = torch.arange(-half_width + step / 2, half_width, step, dtype=torch.float64)
    points = torch.cartesian_prod(ticks, ticks)  # (m², 2)
    return (m.log_prob(points).exp().sum() * step**2).item()


# --- mixtures -------------------------------------------------------------------------------------


def test_ring8_modes_are_on_the_circle_at_angles_2πk_over_8():
    m = ring8()
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    expected = torch.stack([angles.cos(), angles.sin()], dim=1)
    torch.testing.assert_close(m.means, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(m.weights, torch.full((8,), 1 / 8, dtype=torch.float64))
    torch.testing.assert_close(m.stds, torch.full((8,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(
        ring8(radius=2.0, n_modes=5).means.norm(dim=1), 2 * torch.ones(5, dtype=torch.float64)
    )


def test_grid25_modes_are_spacing_times_minus2_to_2_squared():
    m = grid25()
    assert {tuple(p) for p in m.means.tolist()} == {
        (float(a), float(b)) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)
    }
    torch.testing.assert_close(m.stds, torch.full((25,), 0.05, dtype=torch.float64))
    assert grid25(spacing=1.0).means.abs().max().item() == 2.0


@pytest.mark.parametrize(
    ("mixture", "half_width"),
    [(ring8(std=0.1), 1.8), (ring8(std=0.3), 3.0), (grid25(std=0.3), 6.5)],
    ids=["ring8-std0.1", "ring8-std0.3", "grid25-std0.3"],
)
def test_log_prob_integrates_to_one(mixture, half_width):
    step = mixture.stds[0].item() / 6
    assert grid_mass(mixture, half_width, step) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("make", [ring8, grid25])
def test_default_log_prob_matches_torch_distributions_near_the_modes(make):
    m = make()
    k = torch.randint(0, m.n_components, (500,), generator=gen(1))
    x = m.means[k] + 2 * m.stds[0] * torch.randn(500, 2, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(m.log_prob(x), torch_mixture(m).log_prob(x), rtol=1e-10, atol=1e-10)


def test_full_covariance_log_prob_matches_torch_and_scipy():
    m = random_mixture()
    x = 3 * torch.randn(200, 4, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(m.log_prob(x), torch_mixture(m).log_prob(x), rtol=1e-10, atol=1e-10)
    per_component = np.stack(
        [
            np.log(w) + multivariate_normal(mu, c).logpdf(x.numpy())
            for w, mu, c in zip(
                m.weights.numpy(), m.means.numpy(), m.covariances.numpy(), strict=True
            )
        ]
    )
    reference = np.logaddexp.reduce(per_component, axis=0)
    np.testing.assert_allclose(m.log_prob(x).numpy(), reference, rtol=1e-10)
    assert m.log_prob(x.float()).dtype == torch.float32


def test_weights_are_normalised():
    m = GaussianMixture([2.0, 6.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    torch.testing.assert_close(m.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))


@pytest.mark.parametrize("make", [ring8, grid25])
def test_samples_land_on_their_modes_and_visit_all(make):
    m = make()
    x, k = m.sample_with_labels(2_500, generator=gen(0))
    assert x.shape == (2_500, 2) and x.dtype == torch.float32 and k.dtype == torch.int64
    dist = torch.cdist(x.double(), m.means)  # (n, K)
    nearest = dist.argmin(dim=1)
    std = m.stds[0].item()
    assert torch.equal(nearest, k)
    # in 2-D the radius is Rayleigh: P(r > 4σ) = e⁻⁸ ≈ 3e-4, so 2,500 draws may hold one; 5σ: e⁻¹²·⁵
    assert (dist.min(dim=1).values < 5 * std).all()
    assert (dist.min(dim=1).values < 4 * std).float().mean() > 0.998
    counts = torch.bincount(k, minlength=m.n_components)
    assert (counts > 0).all()
    expected = 2_500 / m.n_components
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()


def test_samples_have_the_mixture_moments():
    m = random_mixture(k=2, d=3, seed=3)
    x, k = m.sample_with_labels(40_000, generator=gen(4), dtype=torch.float64)
    assert x.shape == (40_000, 3) and x.dtype == torch.float64
    for j in range(2):
        xj = x[k == j]
        se = (m.covariances[j].diagonal() / len(xj)).sqrt()
        assert ((xj.mean(0) - m.means[j]).abs() < 5 * se).all()
        torch.testing.assert_close(xj.T.cov(), m.covariances[j], rtol=0.05, atol=0.05)
    assert (k == 0).double().mean().item() == pytest.approx(m.weights[0].item(), abs=0.01)


def test_sample_gives_exactly_n_rows_and_follows_the_generator():
    m = ring8()
    assert m.sample(0).shape == (0, 2)
    assert m.sample(7, generator=gen(1)).shape == (7, 2)
    assert torch.equal(m.sample(100, generator=gen(3)), m.sample(100, generator=gen(3)))
    assert not torch.equal(m.sample(100, generator=gen(3)), m.sample(100, generator=gen(4)))
    with pytest.raises(ConfigError, match=r"n must be an integer >= 0, got -1"):
        m.sample(-1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ([1.0, -1.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]]),
            r"weights must be > 0, got weights\[1\] = -1",
        ),
        (
            ([1.0], [[0.0, 1.0]], [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]),
            r"covariances must have shape \(K, d, d\) = \(1, 2, 2\), got \(2, 2, 2\)",
        ),
        (
            ([1.0, 1.0], [0.0, 1.0], [[[1.0]], [[1.0]]]),
            r"means must have shape \(K, d\) = \(2, d\) to match weights, got \(2,\)",
        ),
        (
            ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]),
            r"covariances\[0\] must be positive-definite, its smallest eigenvalue is -1",
        ),
        (([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), r"covariances\[0\] must be symmetric"),
        (
            ([1.0], [[0.0, float("nan")]], [[[1.0, 0.0], [0.0, 1.0]]]),
            r"means must be finite, got means\[0, 1\] = nan",
        ),
        (([1.0], [["a"]], [[[1.0]]]), r"means must be an array of numbers"),
    ],
)
def test_bad_mixture_parameters_name_the_parameter(args, message):
    with pytest.raises(ConfigError, match=message):
        GaussianMixture(*args)


def test_stds_refuses_full_covariances_and_builtins_check_their_options():
    with pytest.raises(ConfigError, match=r"covariances\[0\] is not isotropic"):
        _ = random_mixture().stds
    with pytest.raises(ConfigError, match=r"std must be a finite number > 0, got 0"):
        ring8(std=0)
    with pytest.raises(ConfigError, match=r"n_modes must be an integer >= 1, got 0"):
        ring8(n_modes=0)
    with pytest.raises(ConfigError, match=r"spacing must be a finite number > 0"):
        grid25(spacing=-1.0)


def test_moons_lie_on_two_half_circles():
    x, y = moons(1_001, noise=0.0, generator=gen(0))
    assert x.shape == (1_001, 2) and torch.equal(torch.bincount(y), torch.tensor([500, 501]))
    upper, lower = x[y == 0].double(), x[y == 1].double()
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(500, dtype=torch.float64))
    assert (upper[:, 1] >= -1e-6).all()
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close((lower - centre).norm(dim=1), torch.ones(501, dtype=torch.float64))
    assert (lower[:, 1] <= 0.5 + 1e-6).all()
    noisy, labels = moons(1_001, noise=0.1, generator=gen(0))
    assert torch.equal(labels, y)  # same generator → same shuffle
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.1)


# --- mixture spec files ---------------------------------------------------------------------------


def toml_text(spec: dict) -> str:
    # JSON arrays of numbers are valid TOML arrays
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in spec.items())


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_mixture_spec_round_trips(tmp_path, suffix):
    m = random_mixture()
    path = tmp_path / f"mix{suffix}"
    spec = m.to_spec()
    path.write_text(json.dumps(spec) if suffix == ".json" else toml_text(spec))
    back = mixture_from_spec(path)
    torch.testing.assert_close(back.weights, m.weights)
    torch.testing.assert_close(back.means, m.means)
    torch.testing.assert_close(back.covariances, m.covariances)
    ds = load_data(f"mixture:{path}", n=50, generator=gen(1))
    assert ds.x.shape == (50, 4) and ds.distribution is not None and ds.labels is not None
    torch.testing.assert_close(ds.x, m.sample(50, generator=gen(1)))


def test_mixture_spec_stds_shortcut_and_default_weights(tmp_path):
    path = tmp_path / "ring.toml"
    path.write_text("means = [[1.0, 0.0], [0.0, 1.0]]\nstds = [0.1, 0.2]\n")
    m = mixture_from_spec(path)
    torch.testing.assert_close(m.stds, torch.tensor([0.1, 0.2], dtype=torch.float64))
    torch.testing.assert_close(m.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    path.write_text(
        '{"means": [[1, 0], [0, 1]], "covariances": [[[1, 0], [0, 1]], [[2, 0], [0, 2]]]}'
    )
    path = path.rename(tmp_path / "full.json")
    torch.testing.assert_close(
        mixture_from_spec(path).weights, torch.tensor([0.5, 0.5], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.json", '{"stds": 0.1}', r"is missing key 'means'"),
        ("a.json", '{"means": [[0, 0]]}', r"needs exactly one of 'covariances' .* got neither"),
        (
            "a.json",
            '{"means": [[0, 0]], "stds": 1, "covariances": [[[1, 0], [0, 1]]]}',
            r"got both",
        ),
        ("a.json", '{"means": [[0, 0]], "std": 1}', r"unknown key 'std'; allowed: weights, means"),
        ("a.json", '{"means": [[0, 0]],\n "stds": 1,,}', r"is not valid JSON: line 2, column"),
        ("a.toml", "means = [[0, 0]]\nstds = = 1\n", r"is not valid TOML: .*line 2"),
        (
            "a.json",
            '{"weights": [1, 1], "means": [[0, 0]], "stds": 1}',
            r"means must have shape \(K, d\) = \(2, d\)",
        ),
        (
            "a.json",
            '{"means": [[0, 0]], "covariances": [[[1, 2], [2, 1]]]}',
            r"covariances\[0\] must be positive-definite",
        ),
        ("a.json", '{"means": [[0, 0], [1]], "stds": 1}', r"means must be an array of numbers"),
        ("a.json", "[1, 2]", r"must hold a table of keys"),
        ("a.yaml", "means: []", r"must be a .json or .toml file"),
    ],
)
def test_bad_mixture_specs_name_the_file_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        mixture_from_spec(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_mixture_spec(tmp_path):
    with pytest.raises(DataError, match=r"mixture spec '.*nope.json' not found"):
        load_data(f"mixture:{tmp_path / 'nope.json'}")


# --- digits and MNIST -----------------------------------------------------------------------------


def test_digits():
    ds = load_digits()
    assert ds.x.shape == (1797, 64) and ds.x.dtype == torch.float32 and ds.image_shape == (8, 8)
    assert ds.x.min().item() == 0.0 and ds.x.max().item() == 1.0
    assert torch.equal(torch.unique(ds.labels), torch.arange(10))
    assert load_data("digits", n=100).n == 100


@pytest.fixture(scope="module")
def mnist_test_set():
    return load_mnist(MNIST)


@needs_mnist
def test_mnist_test_set_from_the_shared_folder(mnist_test_set):
    ds = mnist_test_set
    assert ds.x.shape == (10_000, 784) and ds.x.dtype == torch.float32
    assert ds.image_shape == (28, 28) and ds.labels.dtype == torch.int64
    assert 0.0 <= ds.x.min().item() and ds.x.max().item() == 1.0
    assert torch.equal(torch.unique(ds.labels), torch.arange(10))
    assert ds.meta["official"] is True
    assert "official MNIST files (SHA-256 verified)" in ds.describe()
    train, test = train_test_split(ds, 8_000)
    assert (train.n, test.n) == (8_000, 2_000)
    assert torch.equal(test.x, ds.x[8_000:]) and torch.equal(test.labels, ds.labels[8_000:])


@needs_mnist
def test_mnist_raw_copies_load_the_same(tmp_path, mnist_test_set):
    for gz in MNIST.glob("t10k-*.gz"):
        (tmp_path / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    raw = load_data(f"mnist:{tmp_path}")
    assert torch.equal(raw.x, mnist_test_set.x) and torch.equal(raw.labels, mnist_test_set.labels)
    assert raw.meta["official"] is True


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0x0000, type code 0x08 (uint8), ndim, big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(folder, n_images=5, n_labels=5, *, gz=True):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, array in [
        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (n_images, 28, 28))),
        ("t10k-labels-idx1-ubyte", rng.integers(0, 10, n_labels)),
    ]:
        data = idx_bytes(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return folder


def test_small_idx_folder_loads_and_is_not_official(tmp_path):
    ds = load_mnist(fake_mnist(tmp_path / "m"))
    assert ds.x.shape == (5, 784) and ds.meta["official"] is False
    assert "not the official MNIST files" in ds.describe()
    expected = read_idx(tmp_path / "m" / "t10k-images-idx3-ubyte.gz").reshape(5, -1) / 255
    np.testing.assert_allclose(ds.x.numpy(), expected, rtol=1e-6)


def test_gzip_is_detected_by_magic_bytes_not_by_name(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(array))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed"), array)


def test_read_idx_reads_big_endian_types(tmp_path):
    array = np.array([[1.5, -2.0], [3.25, 1e6]], dtype=">f4")
    header = bytes([0, 0, 0x0D, 2]) + struct.pack(">2I", 2, 2)
    (tmp_path / "f").write_bytes(header + array.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), array.astype(np.float32))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_idx_names_file_and_byte_counts(tmp_path, gz):
    source = idx_bytes(np.random.default_rng(0).integers(0, 256, (10, 28, 28)))
    path = tmp_path / "t10k-images-idx3-ubyte"
    if gz:
        packed = gzip.compress(source)
        path.write_bytes(packed[: len(packed) // 2])
        message = (
            r"is truncated: header declares shape \(10, 28, 28\), which needs 7856 bytes, "
            r"the decompressed data has \d+ \(the gzip stream ends early"
        )
    else:
        path.write_bytes(source[:-100])
        message = (
            r"is truncated: header declares shape \(10, 28, 28\), which needs 7856 bytes, "
            r"the file has 7756$"
        )
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@needs_mnist
def test_truncated_official_gz_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((MNIST / path.name).read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz' is truncated: .*10008 bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abcd",
            r"has 1 trailing bytes: .*needs 11 bytes, the file has 12",
        ),
        (b"\x00\x01\x08\x01" + struct.pack(">I", 3) + b"abc", r"bad magic number 0x00010801"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", r"bad magic number 0x00000701"),
        (b"\x00\x00", r"too short for an IDX header: 2 bytes"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 3), r"truncated: its 3-D header needs 16 bytes"),
    ],
    ids=["trailing", "magic", "type-code", "short", "header"],
)
def test_bad_idx_files(tmp_path, data, message):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_trailing_bytes_after_gzip_and_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(1000) % 256))
    (tmp_path / "trail.gz").write_bytes(good + b"junk")
    with pytest.raises(DataError, match=r"trail.gz' has 4 trailing bytes after its gzip data"):
        read_idx(tmp_path / "trail.gz")
    (tmp_path / "inner.gz").write_bytes(gzip.compress(idx_bytes(np.arange(10) % 256) + b"xy"))
    with pytest.raises(DataError, match=r"inner.gz' has 2 trailing bytes: .*decompressed data"):
        read_idx(tmp_path / "inner.gz")
    corrupt = bytearray(good)
    corrupt[20:40] = bytes(range(200, 220))
    (tmp_path / "bad.gz").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"bad.gz' is corrupt gzip"):
        read_idx(tmp_path / "bad.gz")


def test_mnist_folder_problems(tmp_path):
    with pytest.raises(DataError, match=r"MNIST folder '.*nowhere' not found"):
        load_data(f"mnist:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError,
        match=r"empty' has no t10k-images-idx3-ubyte\(\.gz\) and no "
        r"t10k-labels-idx1-ubyte\(\.gz\); .*mnist:DIR",
    ):
        load_data(f"mnist:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match=r"hold 5 images but labels '.*' hold 4 labels"):
        load_mnist(fake_mnist(tmp_path / "mismatch", n_labels=4, gz=False))
    with pytest.raises(ConfigError, match=r"unknown MNIST split 'valid'; known: test, train"):
        load_mnist(tmp_path, split="valid")


def test_find_mnist_folder_honours_pushforward_data(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "direct")
    monkeypatch.setenv("PUSHFORWARD_DATA", str(tmp_path / "direct"))
    assert find_mnist_folder() == (tmp_path / "direct").resolve()
    (tmp_path / "parent").mkdir()
    fake_mnist(tmp_path / "parent" / "mnist")
    monkeypatch.setenv("PUSHFORWARD_DATA", str(tmp_path / "parent"))
    assert find_mnist_folder() == (tmp_path / "parent" / "mnist").resolve()
    assert load_data("mnist").n == 5


def test_mnist_search_order_ends_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHFORWARD_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    paths = datasets._mnist_search_paths()
    assert paths[:2] == [tmp_path / "env", tmp_path / "env" / "mnist"]
    assert paths[-1] == tmp_path / "cache" / "pushforward" / "mnist"
    repo_root = datasets._REPO_ROOT
    assert any(
        p.resolve() == (repo_root.parent / "shared" / "data" / "mnist").resolve() for p in paths
    )


def test_download_without_pooch_or_network_is_a_clean_data_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)
    with pytest.raises(DataError, match=r"needs the 'pooch' package; .*PUSHFORWARD_DATA"):
        download_mnist(tmp_path)
    monkeypatch.undo()
    pooch = pytest.importorskip("pooch")

    def offline(url, **kwargs):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(
        DataError, match=r"could not download MNIST t10k-images-idx3-ubyte.gz .*no network"
    ) as info:
        download_mnist(tmp_path)
    assert all(mirror in str(info.value) for mirror in datasets.MNIST_MIRRORS)


def test_mnist_spec_says_where_it_looked_when_nothing_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_mnist_search_paths", lambda: [tmp_path / "a", tmp_path / "b"])

    def no_download(folder=None, *, split="test"):
        raise DataError("could not download MNIST (no network)")

    monkeypatch.setattr(datasets, "download_mnist", no_download)
    with pytest.raises(
        DataError, match=r"MNIST test files not found in '.*a', '.*b', and could not download"
    ):
        load_data("mnist")


# --- user arrays ----------------------------------------------------------------------------------


class RecordsUnpickling:
    """Unpickling this would flip UNPICKLED: the loader must refuse without doing so."""

    def __reduce__(self):
        return (_mark_unpickled, ())


UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return None


def test_npy_npz_csv_load(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_allclose(load_data(str(tmp_path / "a.npy")).x.numpy(), x, rtol=1e-6)
    np.save(tmp_path / "v.npy", np.arange(5))
    assert load_array(tmp_path / "v.npy").x.shape == (5, 1)
    np.savez(tmp_path / "b.npz", X=x, labels=np.arange(20) % 3)
    ds = load_array(tmp_path / "b.npz")
    assert ds.x.shape == (20, 3) and torch.equal(ds.labels, torch.arange(20) % 3)
    np.savez(tmp_path / "only.npz", whatever=x)
    assert load_array(tmp_path / "only.npz").x.shape == (20, 3)
    np.savez(tmp_path / "two.npz", p=x, q=x)
    with pytest.raises(
        DataError, match=r"two.npz' holds arrays p, q; name the data array x or X or data"
    ):
        load_array(tmp_path / "two.npz")
    (tmp_path / "h.csv").write_text("a,b,label\n1,2,0\n\n3,4.5,1\n")
    ds = load_data(str(tmp_path / "h.csv"))
    torch.testing.assert_close(ds.x, torch.tensor([[1.0, 2.0], [3.0, 4.5]]))
    assert torch.equal(ds.labels, torch.tensor([0, 1]))
    (tmp_path / "n.csv").write_text("1,2\n3,4\n5,6\n")
    assert load_data(str(tmp_path / "n.csv"), n=2).x.shape == (2, 2)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (
            "nan.npy",
            lambda p: np.save(p, np.array([[0.0, 1.0], [2.0, np.nan], [np.inf, 1.0]])),
            r"has 2 non-finite values .*first at row 1, column 1",
        ),
        (
            "nan.csv",
            lambda p: p.write_text("x,y\n1,2\n3,inf\n"),
            r"has 1 non-finite values .*first at line 3, column 2",
        ),
        (
            "cube.npy",
            lambda p: np.save(p, np.zeros((2, 3, 4))),
            r"expected shape \(n, d\), got \(2, 3, 4\)",
        ),
        ("empty.npy", lambda p: np.save(p, np.zeros((0, 3))), r"is empty: shape \(0, 3\)"),
        ("empty.csv", lambda p: p.write_text("a,b\n"), r"is empty"),
        ("text.npy", lambda p: np.save(p, np.array(["a", "b"])), r"dtype <U1 is not numeric"),
        (
            "word.csv",
            lambda p: p.write_text("1,2\n3,4\n5,abc\n"),
            r"line 3, column 2: 'abc' is not a number",
        ),
        ("ragged.csv", lambda p: p.write_text("1,2\n3\n"), r"line 2 has 1 columns, expected 2"),
        (
            "junk.npz",
            lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),
            r"is not a numeric NumPy file",
        ),
        (
            "big.npy",
            lambda p: np.save(p, np.array([[1e300]])),
            r"non-finite values \(NaN, inf or beyond float32\)",
        ),
    ],
)
def test_bad_arrays_name_the_file_and_problem(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError, match=message) as info:
        load_data(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_pickled_object_arrays_are_refused_without_unpickling(tmp_path, suffix):
    objects = np.array([RecordsUnpickling(), RecordsUnpickling()], dtype=object)
    path = tmp_path / f"evil{suffix}"
    if suffix == ".npy":
        np.save(path, objects, allow_pickle=True)
    else:
        np.savez(path, x=objects)
    with pytest.raises(
        DataError, match=r"evil\.np.' is not a numeric NumPy file .*never unpickled"
    ):
        load_data(str(path))
    assert UNPICKLED == []


def test_missing_files_and_unknown_specs(tmp_path):
    with pytest.raises(DataError, match=r"^data file 'x.npy' not found$"):
        load_data("x.npy")
    with pytest.raises(
        DataError,
        match=r"^unknown data 'foo'; use one of: ring8, grid25, moons, digits, mnist, mnist:DIR, "
        r"mixture:FILE.json\|.toml, or a .npy/.npz/.csv file$",
    ):
        load_data("foo")
    with pytest.raises(DataError, match=r"unknown data .*notes.txt"):
        load_data(str(tmp_path / "notes.txt"))
    with pytest.raises(DataError, match=r"IDX file '.*gone' not found"):
        read_idx(tmp_path / "gone")


# --- the entry point ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ring8", "grid25", "moons"])
def test_same_seed_same_data_different_seed_different_data(name):
    a = load_data(name, n=300, generator=gen(7))
    b = load_data(name, n=300, generator=gen(7))
    c = load_data(name, n=300, generator=gen(8))
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(
        load_data(name, n=50).x, load_data(name, n=50).x
    )  # default generator: seed 0
    assert a.x.shape == (300, 2) and a.x.dtype == torch.float32


def test_builtins_registry_and_defaults():
    assert list(BUILTIN_DATA) == ["ring8", "grid25", "moons", "digits", "mnist"]
    ds = load_data("ring8")
    assert ds.n == datasets.DEFAULT_N and ds.distribution is not None
    torch.testing.assert_close(ds.distribution.means, ring8().means)
    with pytest.raises(ConfigError, match=r"n must be an integer >= 1, got 0"):
        load_data("ring8", n=0)
    with pytest.raises(ConfigError, match=r"n must be <= the 1797 rows of 'digits', got 2000"):
        load_data("digits", n=2_000)
    with pytest.raises(ConfigError, match=r"generator must be a torch.Generator"):
        load_data("moons", generator=0)


def test_train_test_split_and_dataset_checks():
    ds = load_data("moons", n=10)
    train, test = train_test_split(ds, 7)
    assert torch.equal(torch.cat([train.x, test.x]), ds.x)
    assert torch.equal(torch.cat([train.labels, test.labels]), ds.labels)
    assert test.meta["rows"] == (7, 10) and "rows 7:10" in test.describe()
    with pytest.raises(ConfigError, match=r"n_train must be < the 10 rows of 'moons', got 10"):
        train_test_split(ds, 10)
    with pytest.raises(DataError, match=r"x must be a float32 tensor \(n, d\), got torch.float64"):
        Dataset(x=torch.zeros(3, 2, dtype=torch.float64), name="bad")
    with pytest.raises(DataError, match=r"image_shape \(3, 3\) does not hold 4 values per row"):
        Dataset(x=torch.zeros(3, 4), name="bad", image_shape=(3, 3))
