"""Rebuild the shipped digit classifier from MNIST, or check the shipped file's hash.

``python -m pushforward.metrics.rebuild_classifier --out PATH`` trains the conv classifier of
:mod:`pushforward.metrics.features` on the shared MNIST protocol (the first 80% of the official
test set, as :func:`pushforward.metrics.image_quality` splits it), seeded and on the CPU, writes
it as safetensors (float16, :func:`~pushforward.metrics.shipped.shipped_form`) with its data
key, settings and held-out accuracy (of the float16 weights) in the metadata, and prints its
SHA-256 and accuracy. To ship it, copy it over :func:`~pushforward.metrics.shipped.shipped_path`
and pin the printed hash in :data:`~pushforward.metrics.shipped.SHIPPED_SHA256`. The same seed on
another CPU may give other last bits (other floating-point kernels), hence another hash, with the
same accuracy to within a few tenths of a point.

``--check`` verifies the shipped file's SHA-256 against the pinned one and, where the MNIST files
are found, that its data key is the one :func:`~pushforward.metrics.digit_features` computes and
its held-out accuracy; it exits 1 when anything does not match.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pushforward.core import save_tensors
from pushforward.data import Dataset, find_mnist_folder, load_data, train_test_split
from pushforward.metrics import shipped
from pushforward.metrics.features import (
    TRAIN_SHARE,
    DigitClassifier,
    accuracy,
    classifier_settings,
    feature_key,
    new_classifier,
    train_classifier,
)
from pushforward.metrics.shipped import shipped_form
from pushforward.train import load_state_checked

__all__ = ["check", "main", "rebuild"]


def _protocol(full: Dataset) -> tuple[Dataset, Dataset, dict[str, Any], str, DigitClassifier]:
    """Return the training and held-out splits of ``full``, the classifier settings, its key
    and an untrained classifier."""
    train, test = train_test_split(full, int(TRAIN_SHARE * full.n))
    settings = classifier_settings(full.image_shape)
    assert full.labels is not None and train.labels is not None and test.labels is not None
    classes = int(full.labels.max()) + 1
    model = new_classifier(full.x.shape[1], classes, settings)
    return train, test, settings, feature_key(train.x, train.labels, settings), model


def rebuild(out: str | Path, *, data: str = "mnist") -> dict[str, Any]:
    """Train the classifier on the protocol split of ``data``, write it to ``out``; return its
    path, SHA-256, data key, held-out accuracy and the CPU seconds its training took."""
    full = load_data(data)
    train, test, settings, key, model = _protocol(full)
    start = time.process_time()
    train_classifier(model, train.x, train.labels, settings)
    cpu_s = time.process_time() - start
    weights = shipped_form(model.state_dict())
    load_state_checked(model, weights, str(out))  # the accuracy of what ships
    acc = accuracy(model, test.x, test.labels)
    metadata = {
        "key": key,
        "settings": json.dumps(settings, sort_keys=True),
        "data": f"{full.name}: rows :{train.n} to train, {train.n}: held out",
        "data_sha256": json.dumps(full.meta.get("sha256", {}), sort_keys=True),
        "accuracy": f"{acc:.4f}",
        "torch": torch.__version__,
    }
    save_tensors(out, weights, metadata)
    digest = shipped.sha256_hex(Path(out).read_bytes())
    return {"path": str(out), "sha256": digest, "key": key, "accuracy": acc, "cpu_s": cpu_s}


def check() -> dict[str, Any]:
    """Return what checking the shipped file found: ``ok``, its ``sha256`` beside the pinned
    one, and where MNIST is found, whether its ``key`` matches and its held-out ``accuracy``."""
    path = shipped.shipped_path()
    digest = shipped.sha256_hex(path.read_bytes()) if path.is_file() else None
    out: dict[str, Any] = {"path": str(path), "sha256": digest, "pinned": shipped.SHIPPED_SHA256}
    out["ok"] = digest == shipped.SHIPPED_SHA256
    folder = find_mnist_folder()
    if not out["ok"] or folder is None:
        return out
    full = load_data(f"mnist:{folder}")
    _, test, _, key, model = _protocol(full)
    found = shipped.read_shipped(key)
    out["key"], out["key_matches"] = key, found is not None
    out["ok"] = found is not None
    if found is not None:
        load_state_checked(model, found[0], str(path))
        out["accuracy"] = accuracy(model, test.x, test.labels)
        out["accuracy_recorded"] = float(found[1]["accuracy"])
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, rebuild or check, print the result; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pushforward.metrics.rebuild_classifier",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", type=Path, help="write the rebuilt weights to this file")
    what.add_argument("--check", action="store_true", help="verify the shipped file's hash")
    parser.add_argument("--data", default="mnist", help="MNIST data spec (default: mnist)")
    args = parser.parse_args(argv)
    if args.check:
        result = check()
        for k, v in result.items():
            print(f"{k}: {v}")
        return 0 if result["ok"] else 1
    result = rebuild(args.out, data=args.data)
    print(f"wrote {result['path']}")
    print(f"sha256: {result['sha256']}")
    print(f"key: {result['key']}")
    print(f"held-out accuracy: {result['accuracy']:.4f}")
    print(f"training: {result['cpu_s']:.1f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
