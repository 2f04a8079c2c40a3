"""The front door: load_data turns one string into a checked Dataset, seeded and reproducible;
Dataset, row selection and the train/test split keep their invariants."""

import pytest
import torch

from pushforward.core import ConfigError, DataError
from pushforward.data import (
    BUILTIN_DATA,
    Dataset,
    datasets,
    load_data,
    load_digits,
    ring8,
    train_test_split,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- digits -----------------------------------------------------------------------------


def test_digits():
    ds = load_digits()
    assert ds.x.shape == (1797, 64) and ds.x.dtype == torch.float32 and ds.image_shape == (8, 8)
    assert ds.x.min().item() == 0.0 and ds.x.max().item() == 1.0
    assert torch.equal(torch.unique(ds.labels), torch.arange(10))
    assert load_data("digits", n=100).n == 100


def test_digits_read_without_scikit_learn_equal_its_loader():
    """The bundled file read directly gives scikit-learn's digits bit for bit, without
    importing scikit-learn (a fresh interpreter: the import costs about a second)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sklearn_digits

    bunch, ds = sklearn_digits(), load_digits()
    assert torch.equal(ds.x, torch.tensor(bunch.data / 16.0, dtype=torch.float32))
    assert torch.equal(ds.labels, torch.from_numpy(bunch.target).long())
    code = ("import sys; from pushforward.data import load_digits; load_digits(); "
            "print('sklearn' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_digits_fall_back_to_scikit_learn_where_the_file_moved(monkeypatch):
    monkeypatch.setattr(datasets, "DIGITS_FILE", ("datasets", "data", "no-such-file.csv.gz"))
    assert datasets._bundled_digits() is None
    fallback = load_digits()
    monkeypatch.undo()
    assert torch.equal(fallback.x, load_digits().x)
    assert torch.equal(fallback.labels, load_digits().labels)


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


def test_the_front_door_re_exports_the_sources_names():
    from pushforward.data import mixtures, mnist

    assert all(hasattr(datasets, name) for name in datasets.__all__)
    for module in (mixtures, mnist):
        for name in set(module.__all__) & set(datasets.__all__):
            assert getattr(datasets, name) is getattr(module, name)
    assert datasets.GaussianMixture is mixtures.GaussianMixture
    assert (
        datasets.read_idx is mnist.read_idx
        and datasets.find_mnist_folder is mnist.find_mnist_folder
    )
