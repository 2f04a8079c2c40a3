"""The data layer: data sources (mixtures, MNIST IDX, user arrays) and the datasets front door.
Imports core."""

from pushforward.data.arrays import ARRAY_SUFFIXES, as_points, read_array
from pushforward.data.datasets import (
    BUILTIN_DATA,
    DEFAULT_N,
    Dataset,
    data_kind,
    load_array,
    load_data,
    load_digits,
    load_mnist,
    select_rows,
    train_test_split,
)
from pushforward.data.mixtures import GaussianMixture, grid25, mixture_from_spec, moons, ring8
from pushforward.data.mnist import (
    KNOWN_MNIST_SHA256,
    MNIST_MIRRORS,
    MnistArrays,
    download_mnist,
    find_mnist_folder,
    locate_mnist,
    mnist_search_paths,
    read_idx,
    read_mnist,
)

__all__ = [
    "ARRAY_SUFFIXES",
    "BUILTIN_DATA",
    "DEFAULT_N",
    "KNOWN_MNIST_SHA256",
    "MNIST_MIRRORS",
    "Dataset",
    "GaussianMixture",
    "MnistArrays",
    "as_points",
    "data_kind",
    "download_mnist",
    "find_mnist_folder",
    "grid25",
    "load_array",
    "load_data",
    "load_digits",
    "load_mnist",
    "locate_mnist",
    "mixture_from_spec",
    "mnist_search_paths",
    "moons",
    "read_array",
    "read_idx",
    "read_mnist",
    "ring8",
    "select_rows",
    "train_test_split",
]
