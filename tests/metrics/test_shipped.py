"""The shipped digit classifier: its pinned hash, refusal of a tampered file, its accuracy on the
held-out MNIST digits, and a rebuild that reaches the same accuracy."""

import fnmatch
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load

from pushforward.core import save_tensors
from pushforward.data import find_mnist_folder, load_data, train_test_split
from pushforward.metrics import digit_features, features, shipped
from pushforward.metrics.rebuild_classifier import main, rebuild
from pushforward.train import load_state_checked

needs_mnist = pytest.mark.skipif(find_mnist_folder() is None, reason="MNIST files not found")


@pytest.fixture
def train_calls(monkeypatch) -> list[int]:
    """Count the classifier trainings digit_features starts (each still trains)."""
    calls: list[int] = []
    train = features.train_classifier

    def counted(model, x, labels, settings):
        calls.append(x.shape[0])
        train(model, x, labels, settings)

    monkeypatch.setattr(features, "train_classifier", counted)
    return calls


def _mnist_protocol():
    full = load_data(f"mnist:{find_mnist_folder()}")
    return (full, *train_test_split(full, int(features.TRAIN_SHARE * full.n)))


def test_the_shipped_file_has_the_pinned_hash_and_the_protocol_settings():
    path = shipped.shipped_path()
    data = path.read_bytes()
    assert shipped.sha256_hex(data) == shipped.SHIPPED_SHA256
    assert len(data) < 2**20  # under 1 MiB: float16 (shipped_form)
    with safe_open(path, "pt") as f:
        key = f.metadata()["key"]
    tensors, meta = shipped.read_shipped(key)
    # the settings digit_features would use for 28×28 digits: changing them without a rebuild
    # would silently retire the shipped file
    assert json.loads(meta["settings"]) == features.classifier_settings((28, 28))
    assert all(t.dtype == torch.float16 for t in tensors.values())
    model = features.new_classifier(784, 10, features.classifier_settings((28, 28)))
    load_state_checked(model, tensors, "shipped")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # cast back on loading
    assert float(meta["accuracy"]) >= 0.985


def test_the_shipped_file_is_package_data():
    """A non-editable install copies only the package data pyproject.toml declares."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    name = f"weights/{shipped.SHIPPED_NAME}"
    assert any(fnmatch.fnmatch(name, g) for g in declared["pushforward.metrics"])
    assert shipped.shipped_path().relative_to(Path(features.__file__).parent) == Path(name)


def test_a_tampered_shipped_file_is_refused_and_the_cache_or_training_take_over(
    tmp_path, monkeypatch, caplog, train_calls
):
    monkeypatch.setitem(features.SETTINGS, "epochs", 1)  # the mechanism, not the accuracy
    train, test = train_test_split(load_data("digits", n=300), 250)
    args = (train.x, train.labels, test.x, test.labels)
    reference = digit_features(*args, cache_dir=tmp_path / "ref")
    assert train_calls == [250]
    # ship those weights: the file under test stands in for the package's
    fake = tmp_path / "weights" / "digits-conv.safetensors"
    save_tensors(fake, reference.model.state_dict(), {"key": reference.key})
    monkeypatch.setattr(shipped, "shipped_path", lambda: fake)
    monkeypatch.setattr(shipped, "SHIPPED_SHA256", shipped.sha256_hex(fake.read_bytes()))
    used = digit_features(*args, cache_dir=tmp_path / "a")
    assert train_calls == [250] and not (tmp_path / "a").exists()  # shipped: no training
    assert torch.equal(used(test.x), reference(test.x))

    data = bytearray(fake.read_bytes())
    data[-1] ^= 0x40  # one byte of the last tensor's last float (its exponent) flipped
    fake.write_bytes(bytes(data))
    tampered = features.new_classifier(64, 10, features.classifier_settings(None))
    tampered.load_state_dict(st_load(bytes(data)))
    tampered.eval()
    with torch.no_grad():  # the tampered weights would classify otherwise
        assert not torch.equal(tampered(test.x), reference.model(test.x))
    with caplog.at_level(logging.WARNING, logger="pushforward.metrics.shipped"):
        trained = digit_features(*args, cache_dir=tmp_path / "b")
    assert "not the pinned" in caplog.text
    assert train_calls == [250, 250]  # the fallback trained, and cached
    assert torch.equal(trained(test.x), reference(test.x))
    cached = digit_features(*args, cache_dir=tmp_path / "b")
    assert train_calls == [250, 250] and torch.equal(cached(test.x), reference(test.x))


def test_a_shipped_file_for_other_data_is_passed_over_quietly(
    tmp_path, monkeypatch, caplog, train_calls
):
    monkeypatch.setitem(features.SETTINGS, "epochs", 1)
    fake = tmp_path / "other.safetensors"
    save_tensors(fake, {"w": torch.zeros(2)}, {"key": "another key"})
    monkeypatch.setattr(shipped, "shipped_path", lambda: fake)
    monkeypatch.setattr(shipped, "SHIPPED_SHA256", shipped.sha256_hex(fake.read_bytes()))
    train, test = train_test_split(load_data("digits", n=160), 130)
    with caplog.at_level(logging.WARNING):
        digit_features(train.x, train.labels, test.x, test.labels, cache_dir=tmp_path / "c")
    assert train_calls == [130] and not caplog.text


@needs_mnist
def test_the_mnist_protocol_uses_the_shipped_classifier_which_is_accurate_held_out(
    tmp_path, train_calls
):
    full, train, test = _mnist_protocol()
    assert (train.n, test.n) == (8000, 2000)
    net = digit_features(train.x, train.labels, test.x, test.labels,
                         image_shape=full.image_shape, cache_dir=tmp_path)  # fmt: skip
    assert train_calls == [] and not any(tmp_path.iterdir())
    assert net.model.side == 28
    assert net.accuracy >= 0.985  # on the 2,000 digits it was not trained on
    _, meta = shipped.read_shipped(net.key)
    assert net.accuracy == pytest.approx(float(meta["accuracy"]), abs=1e-3)


@needs_mnist
def test_check_passes_on_the_shipped_file_and_fails_on_another_hash(monkeypatch, capsys):
    assert main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "ok: True" in out and "key_matches: True" in out
    monkeypatch.setattr(shipped, "SHIPPED_SHA256", "0" * 64)
    assert main(["--check"]) == 1
    assert "ok: False" in capsys.readouterr().out


@pytest.mark.slow
@needs_mnist
def test_a_rebuild_with_the_real_settings_matches_the_shipped_accuracy(tmp_path):
    """Retrains the shipped classifier (minutes of CPU). The same seed gives bit-identical weights
    on one machine, but other CPUs' floating-point kernels change the last bits, hence the hash:
    the test asks for the same data key and the held-out accuracy within half a point."""
    out = rebuild(tmp_path / "rebuilt.safetensors", data=f"mnist:{find_mnist_folder()}")
    found = shipped.read_shipped(out["key"])
    assert found is not None  # the same data and settings
    assert out["accuracy"] == pytest.approx(float(found[1]["accuracy"]), abs=0.005)
