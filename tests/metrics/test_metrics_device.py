"""The sample distances compute on the samples' device: on ``meta`` under the device guard no
operation meets a CPU tensor made inside them (an index, a grid of rows)."""

import pytest
import torch

from pushforward.metrics import energy_distance, knn_kl, mmd2_unbiased

SAMPLE_DISTANCES = {
    "knn_kl": knn_kl,
    "mmd2_unbiased": mmd2_unbiased,
    "energy_distance": energy_distance,
}


@pytest.mark.parametrize("name", list(SAMPLE_DISTANCES))
def test_sample_distances_make_nothing_on_another_device(name, device, meta_guard):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=gen), torch.randn(30, 3, generator=gen) + 0.5
    expected = SAMPLE_DISTANCES[name](x, y)  # on the CPU
    if device.type == "cpu":
        with meta_guard:
            SAMPLE_DISTANCES[name](x.to("meta"), y.to("meta"))
    else:
        got = SAMPLE_DISTANCES[name](x.to(device), y.to(device))
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
