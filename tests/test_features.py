"""The digit feature network: deterministic training, a cache that only saves time, accuracy."""

import torch

from pushforward.datasets import load_data, train_test_split
from pushforward.features import digit_features


def test_feature_network_is_deterministic_cached_and_accurate(tmp_path):
    train, test = train_test_split(load_data("digits"), 1500)
    a = digit_features(train.x, train.labels, test.x, test.labels, cache_dir=tmp_path / "a")
    assert a.accuracy > 0.88
    assert a(test.x).shape == (297, 128)
    files = list((tmp_path / "a").iterdir())
    assert len(files) == 1 and a.key in files[0].name
    b = digit_features(train.x, train.labels, test.x, test.labels, cache_dir=tmp_path / "b")
    assert torch.equal(a(test.x), b(test.x))  # trained again from scratch: bit-identical
    files[0].write_bytes(b"not a safetensors file")  # a corrupt cache is rebuilt, not trusted
    c = digit_features(train.x, train.labels, test.x, test.labels, cache_dir=tmp_path / "a")
    assert torch.equal(a(test.x), c(test.x))
    other = digit_features(
        train.x[:1000], train.labels[:1000], test.x, test.labels, cache_dir=tmp_path / "a"
    )
    assert other.key != a.key
