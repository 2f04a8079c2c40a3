"""The digit feature network: deterministic training, a cache that only saves time, accuracy."""

import pytest
import torch

from pushforward.data import load_data, train_test_split
from pushforward.metrics import digit_features


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


def test_features_are_remembered_only_for_the_same_weights_and_rows(tmp_path, monkeypatch):
    """A process scores the same real images against several models: the features come back
    from memory for the same weights and rows, as a copy, and are computed anew when either
    changes (the weights as they are at the call, not as they were built)."""
    train, test = train_test_split(load_data("digits"), 1500)
    net = digit_features(train.x, train.labels, test.x, test.labels, cache_dir=tmp_path)
    passes = []
    real = net.model.features
    monkeypatch.setattr(net.model, "features", lambda x: passes.append(len(x)) or real(x))
    rows = test.x[:50]
    first = net(rows)
    again = net(rows.clone())
    assert torch.equal(first, again) and len(passes) <= 1  # one pass at most (none if seen)
    kept = first.clone()
    first.add_(1.0)  # a copy: the caller's changes do not reach the memory
    assert torch.equal(net(rows), kept)
    first = kept
    seen = len(passes)
    net(test.x[:51])
    assert len(passes) == seen + 1  # other rows: computed
    with torch.no_grad():
        next(net.model.parameters()).add_(0.05)  # other weights: computed, and different
    moved = net(rows)
    assert len(passes) == seen + 2 and not torch.equal(moved, first)


def test_mnist_gets_a_conv_classifier_that_is_deterministic_and_cached(tmp_path, monkeypatch):
    from pushforward.data import find_mnist_folder
    from pushforward.metrics import features

    if find_mnist_folder() is None:
        pytest.skip("MNIST files not found")
    ds = load_data("mnist", n=600)
    train, test = train_test_split(ds, 500)
    monkeypatch.setitem(features.CONV_SETTINGS, "epochs", 1)  # the network, not its accuracy
    args = (train.x, train.labels, test.x, test.labels)
    conv = digit_features(*args, image_shape=ds.image_shape, cache_dir=tmp_path / "a")
    assert conv.model.side == 28 and conv.model.channels == [32, 64]
    assert conv(test.x).shape == (100, 128)
    again = digit_features(*args, image_shape=ds.image_shape, cache_dir=tmp_path / "b")
    assert torch.equal(conv(test.x), again(test.x))  # trained again from scratch: bit-identical
    mlp = digit_features(*args, cache_dir=tmp_path / "a")
    assert mlp.model.side is None and mlp.key != conv.key
    # 8×8 digits are too small for it: the MLP
    small = load_data("digits", n=200)
    net = digit_features(small.x, small.labels, small.x, small.labels, image_shape=(8, 8),
                         cache_dir=tmp_path / "c")  # fmt: skip
    assert net.model.side is None
    # training shifts each image by up to 2 pixels; evaluation never shifts
    shifted = conv.model._shifted(test.x[:4], torch.Generator().manual_seed(0))
    assert shifted.shape == (4, 784) and not torch.equal(shifted, test.x[:4])
    still = type(conv.model)(784, 10, side=28, shift=0.0)
    assert torch.allclose(still._shifted(test.x[:4], None), test.x[:4], atol=1e-6)


def test_scoring_and_featurising_take_small_passes_without_autograd():
    """The classifier scores and featurises in passes of FEATURE_BATCH rows (the conv net takes
    half the time of passes of 1,024 on a CPU) without recording a graph, with the same result
    as one pass over every row."""
    from pushforward.metrics.features import (
        FEATURE_BATCH,
        DigitClassifier,
        FeatureNet,
        accuracy,
    )

    torch.manual_seed(0)
    model = DigitClassifier(784, 10, side=28)
    x, labels = torch.rand(600, 784), torch.randint(0, 10, (600,))
    seen: list[tuple[int, bool]] = []
    model.body.register_forward_hook(
        lambda _m, inputs, _out: seen.append((inputs[0].shape[0], torch.is_grad_enabled()))
    )
    share = accuracy(model, x, labels)
    features = FeatureNet(model, share, "key")(x)
    assert sum(n for n, _ in seen) == 2 * 600
    assert max(n for n, _ in seen) == FEATURE_BATCH < 600
    assert not any(grad for _, grad in seen)
    with torch.no_grad():
        assert share == float((model(x).argmax(1) == labels).float().mean())
        assert torch.equal(features, model.features(x))
