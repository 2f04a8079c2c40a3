"""An MLP's forward and backward passes written out, for training steps that take no autograd.

On points and small images a CPU training step is short enough that autograd's bookkeeping (a
graph node per operation, its saved tensors, transposes and accumulations) is a large share of it
(BENCHMARKS.md, "Training speed"). The VAE's and the GAN's steps written out
(:mod:`pushforward.models.vae.fused`, :mod:`pushforward.models.gan.fused`) run their
:class:`~pushforward.nets.MLP` s through :func:`forward`, which keeps what the backward reads,
and :func:`backward`, the chain rule layer by layer. For a layer h_out = act(W h_in + c) and the
gradient δ of the loss at its pre-activation a: ∂W = δᵀ h_in, ∂c = Σ_b δ_b, and the layer below
gets act'(a) ⊙ (δ W). Each activation's derivative is PyTorch's own backward kernel
(:data:`FUSED_ACTIVATIONS`), so the derivative at a kink (ReLU at 0) is autograd's, and the
gradients agree with autograd's to rounding.

Those kernels are linear in the incoming gradient, so the same passes also give the derivative
of an input gradient: :func:`input_gradient_backward` is the double backward of R1 (the GAN's
penalty on ‖∇ₓD‖²) for activations whose second derivative is zero
(:data:`PIECEWISE_LINEAR`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.nets.blocks import ACTIVATIONS, MLP

__all__ = [
    "FUSED_ACTIVATIONS",
    "PIECEWISE_LINEAR",
    "Tape",
    "backward",
    "forward",
    "hooked",
    "input_gradient",
    "input_gradient_backward",
    "plain_mlp",
    "trainable",
]

aten = torch.ops.aten

FUSED_ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[..., Tensor], bool]] = {
    "relu": (torch.relu_, lambda g, a, h: aten.threshold_backward(g, h, 0), False),
    "leaky_relu": (
        lambda a: F.leaky_relu(a, 0.01),
        lambda g, a, h: aten.leaky_relu_backward(g, a, 0.01, False),
        True,
    ),
    "leaky_relu_0.2": (
        lambda a: F.leaky_relu(a, 0.2),
        lambda g, a, h: aten.leaky_relu_backward(g, a, 0.2, False),
        True,
    ),
    "elu": (F.elu, lambda g, a, h: aten.elu_backward(g, 1.0, 1, 1, False, a), True),
    "gelu": (F.gelu, lambda g, a, h: aten.gelu_backward(g, a), True),
    "silu": (F.silu, lambda g, a, h: aten.silu_backward(g, a), True),
    "tanh": (torch.tanh_, lambda g, a, h: aten.tanh_backward(g, h), False),
    "sigmoid": (torch.sigmoid_, lambda g, a, h: aten.sigmoid_backward(g, h), False),
    "identity": (lambda a: a, lambda g, a, h: g, False),
}
"""Activation name → (forward, backward(grad, pre-activation, output), whether the backward reads
the pre-activation): PyTorch's own backward kernels. An activation whose backward reads only its
output runs in place, its input not kept."""

PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu", "leaky_relu_0.2", "identity"})
"""The activations whose second derivative is zero wherever it exists: an input gradient's own
derivative then needs no second-order term (:func:`input_gradient_backward`)."""

_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def hooked(module: nn.Module) -> bool:
    """Whether a module has forward or backward hooks, its own or every module's (the global
    ones), which a pass written out would not run."""
    return _own_hooks(module) or global_hooks()


def _own_hooks(module: nn.Module) -> bool:
    """Whether the module itself has forward or backward hooks."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
    )


def global_hooks() -> bool:
    """Whether hooks are registered for every module (``nn.modules.module``'s global ones)."""
    return any(getattr(nn.modules.module, name, None) for name in _GLOBAL_HOOKS)


_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _same_activation(m: nn.Module, name: str) -> bool:
    """Whether the layer m is the activation ``name`` of :data:`~pushforward.nets.ACTIVATIONS`
    with its constants (the leaky ReLU's slope)."""
    ref = _ACTIVATION_MODULES.get(name)
    if ref is None:  # made once: a module's construction costs more than the whole check
        ref = _ACTIVATION_MODULES[name] = ACTIVATIONS[name]()
    slope = getattr(ref, "negative_slope", None)
    return type(m) is type(ref) and getattr(m, "negative_slope", None) == slope


_ACTIVATION_MODULES: dict[str, nn.Module] = {}


def trainable(p: Tensor) -> bool:
    """Whether p is a float32 leaf that autograd would train, with no hook that would see its
    gradient."""
    return (
        p.requires_grad
        and p.dtype == torch.float32
        and not any(getattr(p, h, None) for h in _TENSOR_HOOKS)
    )


def plain_mlp(net: nn.Module) -> bool:
    """Whether :func:`forward` and :func:`backward` compute ``net`` and its gradients: an
    :class:`~pushforward.nets.MLP` itself (not a subclass) with an activation of
    :data:`FUSED_ACTIVATIONS`, no hooks, and every weight trainable float32."""
    if type(net) is not MLP or net.activation not in FUSED_ACTIVATIONS or hooked(net):
        return False  # hooked: the net's own hooks or the global ones, checked once here
    for i, m in enumerate(net):  # Linear, activation, …, Linear: the MLP's own, no nesting
        if _own_hooks(m) or m._modules:
            return False
        if not (type(m) is nn.Linear if i % 2 == 0 else _same_activation(m, net.activation)):
            return False
        if not all(p is not None and trainable(p) for p in m._parameters.values()):
            return False
    return True


@dataclass
class Tape:
    """What :func:`forward` keeps for the backward, per layer: its input (B, n_in), its
    pre-activation (B, n_out) where the activation's backward reads it (else None), and its
    output (B, n_out)."""

    ins: list[Tensor]
    pres: list[Tensor | None]
    outs: list[Tensor]

    def rows(self, n: int) -> Tape:
        """The tape of the first n rows (views): each tensor (B, …) cut to (n, …)."""
        return Tape([t[:n] for t in self.ins], [None if t is None else t[:n] for t in self.pres],
                    [t[:n] for t in self.outs])  # fmt: skip


def forward(net: MLP, h: Tensor) -> tuple[Tensor, Tape]:
    """Return ``net(h)`` (B, out) for h (B, in), and the tape its backward reads."""
    act = FUSED_ACTIVATIONS[net.activation][0]
    keeps_input = FUSED_ACTIVATIONS[net.activation][2]
    linears = net.linears
    tape = Tape([], [], [])
    for i, lin in enumerate(linears):
        tape.ins.append(h)
        a = torch.addmm(lin.bias, h, lin.weight.t())
        last = i == len(linears) - 1
        tape.pres.append(a if keeps_input and not last else None)
        h = a if last else act(a)
        tape.outs.append(h)
    return h, tape


def _act_backward(net: MLP, g: Tensor, tape: Tape, i: int) -> Tensor:
    """act'(a_i) ⊙ g for the activation after layer i (not the last)."""
    return FUSED_ACTIVATIONS[net.activation][1](g, tape.pres[i], tape.outs[i])


def backward(
    net: MLP, tape: Tape, delta: Tensor, *, weights: bool = True, inputs: bool | slice = False
) -> tuple[Tensor | None, list[tuple[Tensor, Tensor]]]:
    """Return (∂loss/∂h (B, in), of the rows ``inputs`` selects (all for True), or None, and
    [(W₁, ∂W₁), (c₁, ∂c₁), …] input side first if ``weights`` else []) from δ = ∂loss/∂output
    (B, out) and :func:`forward`'s tape."""
    linears = net.linears
    grads: list[tuple[Tensor, Tensor]] = []
    for i in reversed(range(len(linears))):
        lin = linears[i]
        if i < len(linears) - 1:
            delta = _act_backward(net, delta, tape, i)
        if weights:
            grads[:0] = [(lin.weight, delta.t().mm(tape.ins[i])), (lin.bias, delta.sum(0))]
        if i == 0:
            if inputs is False:
                return None, grads
            if isinstance(inputs, slice):
                delta = delta[inputs]
        delta = delta.mm(lin.weight)
    return delta, grads


def input_gradient(net: MLP, tape: Tape) -> tuple[Tensor, list[Tensor]]:
    """Return (∇ₕ net(h) (B, in) for a net with one output, and the gradients u_i (B, n_out_i) at
    each layer's pre-activation on the way) from :func:`forward`'s tape of h."""
    linears = net.linears
    rows = tape.ins[0].shape[0]
    v = tape.ins[0].new_ones(rows, 1)
    us: list[Tensor] = []
    for i in reversed(range(len(linears))):
        if i < len(linears) - 1:
            v = _act_backward(net, v, tape, i)
        us.insert(0, v)
        v = v.mm(linears[i].weight)
    return v, us


def input_gradient_backward(
    net: MLP, tape: Tape, us: list[Tensor], dgrad: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """Return [(W_i, ∂/∂W_i)] input side first of a loss on :func:`input_gradient`'s result,
    given its gradient ``dgrad`` (B, in), for an activation of :data:`PIECEWISE_LINEAR`.

    The input gradient is v₀ with v_i = u_i W_i and u_i = act'(a_i) ⊙ v_{i+1} (u_last = 1):
    linear in the weights given the activations' derivatives, which are constant almost
    everywhere (no second-order term), so the pass runs forward: ∂W_i = u_iᵀ ∂v_i and
    ∂v_{i+1} = act'(a_i) ⊙ (∂v_i W_iᵀ). The biases get no gradient."""
    if net.activation not in PIECEWISE_LINEAR:
        raise ValueError(
            f"the input gradient's derivative is written out for piecewise-linear activations "
            f"({', '.join(sorted(PIECEWISE_LINEAR))}), not {net.activation!r}"
        )
    linears = net.linears
    grads: list[tuple[Tensor, Tensor]] = []
    dv = dgrad
    for i, lin in enumerate(linears):
        grads.append((lin.weight, us[i].t().mm(dv)))
        if i == len(linears) - 1:
            break
        dv = _act_backward(net, dv.mm(lin.weight.t()), tape, i)
    return grads
