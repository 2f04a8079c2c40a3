"""The device guard itself: it fails on a stray CPU tensor or a CPU generator meeting a model on
``meta``, and lets clean code through (values read as zeros, checks as passed)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from device_guard import StrayTensorError


def test_a_cpu_input_to_a_meta_layer_is_caught(meta_guard):
    layer = nn.Linear(3, 2).to("meta")
    with pytest.raises(StrayTensorError, match=r"CPU tensor of shape \(4, 3\)"), meta_guard:
        F.linear(torch.ones(4, 3), layer.weight)  # plain meta returns a CPU tensor here


def test_noise_made_on_the_cpu_is_caught(meta_guard):
    w = torch.ones(2, device="meta")
    with pytest.raises(StrayTensorError, match="meets the model's meta tensors"), meta_guard:
        _ = w + torch.randn(5, 2)


def test_a_cpu_generator_drawing_on_meta_is_caught(meta_guard):
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(StrayTensorError, match="CPU generator"), meta_guard:
        torch.randn(3, generator=gen, device="meta")


def test_clean_code_passes_and_comes_back_to_the_cpu(meta_guard):
    layer = nn.Linear(3, 2).to("meta")
    gen = torch.Generator().manual_seed(0)
    with meta_guard, torch.no_grad():
        x = torch.randn(4, 3, generator=gen).to("meta")  # drawn where the generator is, moved
        y = layer(x) * torch.tensor(2.0)  # a 0-dim CPU scalar mixes with any device
        assert bool(torch.isfinite(y).all()) and not bool((y < 0).any())
        assert float(y.sum()) == 0.0  # values read as zeros
        back = y.cpu()
    assert back.device.type == "cpu" and back.shape == (4, 2) and not back.any()


def test_the_guard_leaves_cpu_code_alone(meta_guard):
    with meta_guard:
        y = torch.ones(3) + torch.arange(3)
    assert y.tolist() == [1.0, 2.0, 3.0]
