"""Run folders written by earlier releases load and compute what they computed then.

``tests/fixtures/runs/format1`` holds runs written by the release before the model contract (run
format 1: the settings as one flat table); ``format2`` by the release with it. Each folder's
``expected.json`` holds the decoder's (and, where the model had them, the encoder's and the exact
log-density's) outputs at fixed inputs, computed by the release that wrote the folder. The
weights are kept as text, ``model.json``, tensor by tensor and exact; the ``stored_run`` fixture
writes the ``model.safetensors`` the release wrote from it.
"""

import json
from pathlib import Path

import pytest
import torch

from pushforward.runs import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
FOLDERS = sorted(p for fmt in ("format1", "format2") for p in (FIXTURES / fmt).iterdir())


def test_every_format_and_model_has_a_fixture():
    names = {(p.parent.name, p.name) for p in FOLDERS}
    assert {("format1", m) for m in ("pca", "ppca", "ae", "vae", "gan")} <= names
    assert {("format2", m) for m in ("pca", "ppca", "ae", "vae", "gan", "flow", "fm")} <= names


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_a_stored_run_loads_and_computes_what_it_did(folder, stored_run):
    model = load_model(stored_run(folder))
    expected = json.loads((folder / "expected.json").read_text())
    z, x = torch.tensor(expected["z"]), torch.tensor(expected["x"])
    with torch.no_grad():
        torch.testing.assert_close(
            model.decode(z), torch.tensor(expected["decode"]), atol=1e-5, rtol=1e-5
        )
        if "encode" in expected:
            torch.testing.assert_close(
                model.encode(x), torch.tensor(expected["encode"]), atol=1e-5, rtol=1e-5
            )
        if "log_prob" in expected:
            torch.testing.assert_close(
                model.log_prob(x), torch.tensor(expected["log_prob"]), atol=1e-4, rtol=1e-5
            )
        if model.generative:
            assert model.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)
