"""``evaluate --json`` prints strict JSON: a value not defined here (NaN) or infinite is null."""

import json
import math

import pytest

import pushforward.runs
from pushforward.cli import main
from pushforward.runs import strict_json


def no_constants(name: str):
    raise AssertionError(f"{name} is not JSON")


def test_strict_json_writes_non_finite_floats_as_null():
    value = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], "c": {"d": math.nan}, "e": 0}
    assert strict_json(value) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None}, "e": 0}
    json.dumps(strict_json(value), allow_nan=False)


def test_evaluate_json_is_strict(capsys, monkeypatch):
    result = {"run": "r", "model": "VAE", "n": 1, "log_likelihood": -3.5,
              "log_likelihood_stderr": math.nan, "kl_to_truth": math.inf}  # fmt: skip
    monkeypatch.setattr(pushforward.runs, "evaluate_run", lambda *a, **k: dict(result))
    assert main(["evaluate", "r", "--data", "ring8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert out["log_likelihood_stderr"] is None and out["kl_to_truth"] is None
    assert out["log_likelihood"] == -3.5


@pytest.mark.slow
def test_evaluate_json_of_one_row_is_strict(capsys, tmp_path):
    assert main(["fit", "ppca", "--data", "ring8", "-n", "200", "--latent", "1",
                 "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    argv = ["evaluate", str(tmp_path / "r"), "--data", "ring8", "-n", "200", "--rows", "0:1"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert out["n"] == 1
