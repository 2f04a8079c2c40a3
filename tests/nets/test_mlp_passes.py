"""An MLP's passes written out (:mod:`pushforward.nets.fused`): the output, every weight's
gradient, the input gradient and R1's double backward, each against autograd's."""

import pytest
import torch
from torch import nn

from pushforward.nets import MLP
from pushforward.nets.fused import (
    FUSED_ACTIVATIONS,
    PIECEWISE_LINEAR,
    backward,
    forward,
    input_gradient,
    input_gradient_backward,
    plain_mlp,
)


def _mlp(act: str, out: int = 3, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(4, [7, 5], out, activation=act)


def _x(n: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("act", sorted(FUSED_ACTIVATIONS))
def test_forward_and_backward_equal_autograds_for_every_activation(act):
    net, x = _mlp(act), _x()
    delta = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out, tape = forward(net, x.clone())
        dx, pairs = backward(net, tape, delta.clone(), inputs=True)
    xr = x.clone().requires_grad_(True)
    ref = net(xr)
    ref.backward(delta)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx, xr.grad, rtol=1e-5, atol=1e-6)
    assert [id(p) for p, _ in pairs] == [id(p) for p in net.parameters()]  # input side first
    for p, g in pairs:
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


def test_backward_gives_the_input_gradient_of_the_rows_asked_or_none():
    net, x = _mlp("relu"), _x()
    delta = torch.randn(9, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, tape = forward(net, x)
        full, _ = backward(net, tape, delta, inputs=True)
        _, tape = forward(net, x)
        rows, _ = backward(net, tape, delta, inputs=slice(5, None))
        _, tape = forward(net, x)
        none, pairs = backward(net, tape, delta, weights=False)
    assert none is None and pairs == []
    torch.testing.assert_close(rows, full[5:])


@pytest.mark.parametrize("act", sorted(PIECEWISE_LINEAR))
def test_input_gradient_and_its_derivative_are_autograds_double_backward(act):
    """R1 = ½ mean ‖∇ₓD‖² of a one-output MLP: its value and its gradient in the weights (the
    double backward), written out, against autograd's with create_graph."""
    net, x = _mlp(act, out=1), _x(12)
    with torch.no_grad():
        _, tape = forward(net, x)
        grad, us = input_gradient(net, tape)
        pairs = input_gradient_backward(net, tape, us, grad / x.shape[0])
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(net(xr).sum(), xr, create_graph=True)
    torch.testing.assert_close(grad, ref.detach(), rtol=1e-5, atol=1e-6)
    net.zero_grad()
    (0.5 * ref.square().sum(1).mean()).backward()
    weights = [lin.weight for lin in net.linears]
    assert [id(p) for p, _ in pairs] == [id(w) for w in weights]
    for w, (_, g) in zip(weights, pairs, strict=True):
        torch.testing.assert_close(g, w.grad, rtol=1e-5, atol=1e-6)
    for lin in net.linears:  # R1 does not depend on the biases (almost everywhere)
        assert lin.bias.grad is None or float(lin.bias.grad.abs().max()) == 0.0


def test_the_double_backward_refuses_a_curved_activation():
    net = _mlp("tanh", out=1)
    with torch.no_grad():
        _, tape = forward(net, _x())
        grad, us = input_gradient(net, tape)
        with pytest.raises(ValueError, match="not 'tanh'"):
            input_gradient_backward(net, tape, us, grad)


def test_plain_mlp_refuses_what_the_passes_would_not_run():
    assert plain_mlp(_mlp("relu"))
    hooked = _mlp("relu")
    hooked.register_forward_hook(lambda *a: None)
    layer_hooked = _mlp("relu")
    layer_hooked[0].register_forward_pre_hook(lambda *a: None)
    frozen = _mlp("relu")
    frozen[0].weight.requires_grad_(False)
    double = _mlp("relu").double()
    grad_hook = _mlp("relu")
    grad_hook[2].bias.register_hook(lambda g: g)

    class Sub(MLP):
        pass

    sub = Sub(4, [3], 2)
    unknown = _mlp("relu")
    unknown.activation = "softsign"
    swapped = _mlp("relu")
    swapped[1] = nn.Tanh()  # the layer no longer what the name says
    slope = _mlp("leaky_relu")
    slope[1] = nn.LeakyReLU(0.2)
    lora = _mlp("relu")

    class Adapted(nn.Linear):
        pass

    lora[2] = Adapted(7, 5)
    nets = (hooked, layer_hooked, frozen, double, grad_hook, sub, unknown, swapped, slope, lora,
            nn.Linear(2, 2))  # fmt: skip
    for net in nets:
        assert not plain_mlp(net)
    handle = nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:  # a hook on every module
        assert not plain_mlp(_mlp("relu"))
    finally:
        handle.remove()
    assert plain_mlp(_mlp("leaky_relu_0.2"))
