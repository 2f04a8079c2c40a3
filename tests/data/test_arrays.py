"""User arrays: .npy, .npz and .csv files load as float32 points with optional labels, pickles
are refused without being unpickled, and each bad file gives one DataError naming it."""

import numpy as np
import pytest
import torch

from pushforward.core import DataError
from pushforward.data import ARRAY_SUFFIXES, as_points, load_array, load_data, read_array

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


def test_read_array_returns_the_checked_tensors(tmp_path):
    assert ARRAY_SUFFIXES == (".npy", ".npz", ".csv")
    np.savez(tmp_path / "b.npz", x=np.arange(6).reshape(3, 2), y=np.array([0.0, 1.0, 1.0]))
    x, labels = read_array(tmp_path / "b.npz")
    assert torch.equal(x, torch.arange(6, dtype=torch.float32).reshape(3, 2))
    assert labels.dtype == torch.int64 and torch.equal(labels, torch.tensor([0, 1, 1]))
    np.save(tmp_path / "a.npy", np.ones((2, 2)))
    assert read_array(tmp_path / "a.npy")[1] is None
    with pytest.raises(DataError, match=r"data file '.*a.txt' must end in .npy, .npz, .csv"):
        read_array(tmp_path / "a.txt")


def test_as_points_names_the_source_and_cell():
    assert as_points(np.arange(3), "v").shape == (3, 1)
    with pytest.raises(
        DataError, match=r"^src has 1 non-finite .*first at row 0, column 1 \(count"
    ):
        as_points(np.array([[0.0, np.nan]]), "src")
    with pytest.raises(DataError, match=r"^src has 1 non-finite .*first at cell 0/1$"):
        as_points(np.array([[0.0, np.inf]]), "src", lambda r, c: f"cell {r}/{c}")


def test_labels_must_be_one_whole_number_per_row(tmp_path):
    np.savez(tmp_path / "half.npz", x=np.zeros((2, 2)), y=np.array([0.0, 0.5]))
    with pytest.raises(DataError, match=r"half.npz': labels must be whole numbers$"):
        read_array(tmp_path / "half.npz")
    np.savez(tmp_path / "short.npz", x=np.zeros((2, 2)), y=np.array([1]))
    with pytest.raises(DataError, match=r"short.npz': labels must be 2 numbers, got int64 \(1,\)"):
        read_array(tmp_path / "short.npz")
