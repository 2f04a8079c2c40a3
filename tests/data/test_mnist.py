"""MNIST IDX files: reading raw and gzipped files, finding and downloading the test set, checking
it against the official SHA-256, and one clear DataError per kind of broken file or folder."""

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pushforward.core import ConfigError, DataError
from pushforward.data import (
    MNIST_MIRRORS,
    download_mnist,
    find_mnist_folder,
    load_data,
    load_mnist,
    mnist,
    read_idx,
    read_mnist,
    train_test_split,
)

MNIST = find_mnist_folder()
needs_mnist = pytest.mark.skipif(MNIST is None, reason="MNIST test-set files not found")


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
    paths = mnist.mnist_search_paths()
    assert paths[:2] == [tmp_path / "env", tmp_path / "env" / "mnist"]
    assert paths[-1] == tmp_path / "cache" / "pushforward" / "mnist"
    repo_root = Path(mnist.__file__).resolve().parents[3]
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
    assert all(mirror in str(info.value) for mirror in MNIST_MIRRORS)


def test_mnist_spec_says_where_it_looked_when_nothing_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "mnist_search_paths", lambda: [tmp_path / "a", tmp_path / "b"])

    def no_download(folder=None, *, split="test"):
        raise DataError("could not download MNIST (no network)")

    monkeypatch.setattr(mnist, "download_mnist", no_download)
    with pytest.raises(
        DataError, match=r"MNIST test files not found in '.*a', '.*b', and could not download"
    ):
        load_data("mnist")


def test_read_mnist_gives_the_raw_arrays_load_mnist_scales(tmp_path):
    folder = fake_mnist(tmp_path / "m", gz=False)
    arrays = read_mnist(folder)
    assert arrays.images.shape == (5, 28, 28) and arrays.images.dtype == np.uint8
    assert arrays.labels.shape == (5,) and arrays.labels.dtype == np.uint8
    assert arrays.image_file == folder / "t10k-images-idx3-ubyte" and arrays.official is False
    assert set(arrays.sha256) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    ds = load_mnist(folder)
    assert torch.equal(ds.x, torch.from_numpy(arrays.images.reshape(5, -1) / np.float32(255)))
    assert torch.equal(ds.labels, torch.from_numpy(arrays.labels.astype(np.int64)))


def test_missing_idx_file(tmp_path):
    with pytest.raises(DataError, match=r"IDX file '.*gone' not found"):
        read_idx(tmp_path / "gone")
