"""Network blocks: shapes through MLP and conv nets, tied weights, and configuration errors."""

import pytest
import torch
from torch import nn

from pushforward.core import ConfigError
from pushforward.nets import MLP, NetConfig, TiedDecoder, build_decoder, build_encoder


@pytest.mark.parametrize("side", [28, 8])
def test_conv_encoder_and_decoder_retrace_image_sizes(side):
    cfg = NetConfig("conv")
    enc = build_encoder(cfg, side * side, 5, (side, side))
    dec = build_decoder(cfg, 5, side * side, (side, side))
    x = torch.rand(3, side * side)
    assert enc(x).shape == (3, 5)
    assert dec(enc(x)).shape == (3, side * side)


def test_mlp_layers_and_decoder_mirrors_widths():
    enc = build_encoder(NetConfig(hidden=[32, 16]), 10, 2)
    dec = build_decoder(NetConfig(hidden=[32, 16]), 2, 10)
    assert [m.out_features for m in enc.linears] == [32, 16, 2]
    assert [m.out_features for m in dec.linears] == [16, 32, 10]
    assert isinstance(enc[1], nn.ReLU)
    assert not isinstance(enc[-1], nn.ReLU)


def test_tied_decoder_uses_encoder_transposes():
    torch.manual_seed(0)
    enc = MLP(6, [4], 2, activation="tanh")
    dec = TiedDecoder(enc, activation="tanh")
    assert sum(p.numel() for p in dec.parameters()) == 4 + 6  # biases only
    z = torch.randn(5, 2)
    w1, w2 = enc.linears[0].weight, enc.linears[1].weight
    want = torch.tanh(z @ w2) @ w1  # biases start at zero
    torch.testing.assert_close(dec(z), want)
    with torch.no_grad():
        enc.linears[0].weight.mul_(2)
    torch.testing.assert_close(dec(z), torch.tanh(z @ w2) @ (w1))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: NetConfig("transformer"), "unknown network kind 'transformer'; known: conv, mlp"),
        (lambda: NetConfig(activation="swish"), "unknown activation 'swish'; known: elu"),
        (
            lambda: NetConfig(hidden=[0]),
            r"hidden = \[0\] is not allowed; use a list of integers",
        ),
        (lambda: build_encoder(NetConfig("conv"), 10, 2, None), "square images"),
    ],
)
def test_bad_network_settings(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_empty_hidden_list_means_a_single_linear_layer():
    enc = build_encoder(NetConfig(hidden=[], activation="identity"), 10, 3)
    assert [m.out_features for m in enc.linears] == [3] and len(enc) == 1
