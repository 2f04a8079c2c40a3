"""The VAE's training loss with its backward written out, so that a step needs no autograd.

At the classic MNIST size (784–400–20, batch 128) a CPU step is short enough that autograd's
bookkeeping (a graph of about thirty nodes, their saved tensors, transposes and accumulations)
costs a tenth of it (BENCHMARKS.md, "Training speed"). For a VAE whose encoder and decoder are
MLPs, :func:`vae_loss_and_gradients` computes :meth:`pushforward.vae.VAE.loss` and its gradient
with respect to every weight by the chain rule, written as the lecture writes it. With B rows, λ
the KL weight, R the reconstruction term per row and o = g(z) the decoder's output:

* loss = (1/B) Σ_b [R(x_b, o_b) + λ KL_b], KL_b = ½ Σ_j (μ_j² + e^{ξ_j} − 1 − ξ_j);
* ∂loss/∂o = (1/B) ∂R/∂o: σ(o) − x for ``bce`` (R the Bernoulli −log p), 2(o − x) for ``l2``,
  sign(o − x) for ``l1``; (o − x)/σ² and sign(o − x)/b for the ``gaussian`` and ``laplace``
  likelihoods, whose learned log-scale s gets (1/B) Σ_b (1 − ((x − o)/σ)²), resp.
  (1 − |x − o|/b);
* through each layer h_out = act(W h_in + c), from the output back: ∂W = δᵀ h_in, ∂c = Σ_b δ,
  and δ ← act'(·) ⊙ (δ W) for the layer below;
* at z = μ + e^{ξ/2} ε: ∂/∂μ = δ_z + λ μ / B and ∂/∂ξ = ½ δ_z ⊙ (z − μ) + λ (e^ξ − 1) / (2B),
  zero where ξ was clamped to the log-variance range.

:meth:`pushforward.vae.VAE.manual_gradients` hands the gradients to the training step, which
sets them as the parameters' ``.grad`` and steps the optimiser: no autograd graph is built at all
(nor are module or gradient hooks run: a hooked model takes autograd).
The noise ε is drawn from the run's generator where the autograd loss draws it, so a run takes
the same random numbers either way, and the two agree to rounding (the tests compare every
gradient with autograd's). Conv nets, free bits, trained priors, autocast, torchrun and subclasses
that change the loss take autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.models.vae.posterior import LOGVAR_RANGE
from pushforward.nets import MLP, gaussian_kl_terms, negative_log_likelihood, reconstruction
from pushforward.train import autocast_enabled

__all__ = ["FUSED_ACTIVATIONS", "fusable", "parameters", "vae_loss_and_gradients"]

aten = torch.ops.aten

# activation name → (forward, backward(grad, input, output), whether the backward needs the
# input): PyTorch's own backward kernels, so the derivative at a kink (ReLU at 0) is autograd's.
# An activation whose backward reads only its output runs in place, its input not kept.
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


def _hooked(module: torch.nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
    )


_TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def _trainable(p: Tensor) -> bool:
    """A float32 leaf that autograd would train, with no hook that would see its gradient."""
    return (
        p.requires_grad
        and p.dtype == torch.float32
        and not any(getattr(p, h, None) for h in _TENSOR_HOOKS)
    )


def fusable(vae: Any, x: Tensor) -> bool:
    """Whether :func:`vae_loss_and_gradients` computes ``vae.loss(x)`` and its gradients for this
    model and batch: MLP encoder and decoder with a known activation, every parameter theirs (or
    the learned log-scale), trainable and float32, no hooks on the nets or their weights (the
    hand-written step runs neither), no free bits, float32 data without autocast. (Overrides of
    the loss in a subclass are :meth:`VAE.manual_gradients`' to see.) Called every step: cheap."""
    if x.dim() != 2 or x.dtype != torch.float32 or vae.config.free_bits != 0:
        return False
    enc, dec = vae.encoder, vae.decoder
    if not (type(enc) is MLP and type(dec) is MLP and enc.activation == dec.activation
            and enc.activation in FUSED_ACTIVATIONS):  # fmt: skip
        return False
    if autocast_enabled(x.device) or _hooked(vae):
        return False
    seen = 0
    for net in (enc, dec):
        if _hooked(net):
            return False
        for m in net:  # the MLP's own layers: Linear and activation modules, no nesting
            if _hooked(m) or m._modules:
                return False
            for p in m._parameters.values():
                if p is None or not _trainable(p):
                    return False
                seen += 1
    scale = vae.log_scale
    if isinstance(scale, torch.nn.Parameter):
        if not _trainable(scale):
            return False
        seen += 1
    # nothing else trains: the nets' weights and the log-scale are all of the model's parameters
    return seen == sum(1 for _ in vae.parameters())


def _reconstruction(family: str, nll: bool, x: Tensor, o: Tensor, s: Tensor) -> Tensor:
    """Σ_b R(x_b, o_b) over the batch, R as :meth:`pushforward.vae.VAE.loss` takes it per row."""
    if family == "bce":  # the same sum as the per-row one, in one kernel
        return F.binary_cross_entropy_with_logits(o, x, reduction="sum")
    if nll:
        return negative_log_likelihood(family, x, o, s).sum()
    return reconstruction(family, x, o).sum()


def parameters(vae: Any) -> list[Tensor]:
    """W₁, c₁, W₂, c₂, … of the encoder then the decoder, input side first."""
    params: list[Tensor] = []
    for net in (vae.encoder, vae.decoder):
        for lin in net.linears:
            params += [lin.weight, lin.bias]
    return params


@torch.no_grad()
def vae_loss_and_gradients(
    vae: Any, x: Tensor, eps: Tensor, lam: float
) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
    """Return ({'loss', 'reconstruction', 'kl'}, (parameter, gradient of the loss) pairs for the
    nets' weights and biases in :func:`parameters`' order, then the learned log-scale if any)
    for ``vae.loss`` on the batch x (B, d) with the noise ε (B, k) and KL weight λ, without
    autograd (see the module's docstring). Call only where :func:`fusable` holds."""
    lo, hi = LOGVAR_RANGE
    family, nll = vae.likelihood.family, vae.likelihood.trains_on_nll
    act, act_backward, keeps_input = FUSED_ACTIVATIONS[vae.encoder.activation]
    s = vae.log_scale
    params = parameters(vae)
    weights, biases = params[0::2], params[1::2]
    n_enc, n_layers = len(vae.encoder.linears), len(weights)
    b = x.shape[0]

    ins, pres, outs = [], [], []  # per layer: input, pre-activation (if needed), output
    h = x
    for i in range(n_layers):
        if i == n_enc:  # the encoder's last layer was the (μ, ξ) head: sample z
            k = h.shape[1] // 2
            mu, xi_raw = h[:, :k], h[:, k:]
            xi = xi_raw.clamp(lo, hi)
            std = torch.exp(0.5 * xi)
            h = torch.addcmul(mu, std, eps)  # z
        ins.append(h)
        a = torch.addmm(biases[i], h, weights[i].t())
        last = i in (n_enc - 1, n_layers - 1)
        pres.append(a if keeps_input and not last else None)
        h = a if last else act(a)
        outs.append(h)
    o = h
    rec = _reconstruction(family, nll, x, o, s) / b
    kl = gaussian_kl_terms(mu, xi).sum() / b
    terms = {"loss": rec + lam * kl, "reconstruction": rec, "kl": kl}

    grad_s = None
    learned = isinstance(s, torch.nn.Parameter) and s.requires_grad
    if family == "bce":
        delta = torch.sigmoid(o).sub_(x)
    elif family == "l2":
        r = o - x
        if nll:
            inv = torch.exp(-2 * s)
            delta = r * inv
            if learned:
                grad_s = (1.0 - r.pow(2) * inv).sum(0) / b
        else:
            delta = 2.0 * r
    else:
        r = o - x
        if nll:
            inv = torch.exp(-s)
            delta = torch.sign(r) * inv
            if learned:
                grad_s = (1.0 - r.abs() * inv).sum(0) / b
        else:
            delta = torch.sign(r)
    if grad_s is not None and not s.dim():
        grad_s = grad_s.sum()
    delta = delta.mul_(1.0 / b)
    grads: list[Tensor] = [x] * len(params)  # placeholders, each replaced below
    for i in reversed(range(n_layers)):
        if i not in (n_enc - 1, n_layers - 1):
            delta = act_backward(delta, pres[i], outs[i])
        grads[2 * i] = delta.t().mm(ins[i])
        grads[2 * i + 1] = delta.sum(0)
        if i == 0:
            break
        delta = delta.mm(weights[i])
        if i == n_enc:  # delta is ∂/∂z: through the sampling step to the (μ, ξ) head
            d_head = torch.empty(b, 2 * k, dtype=x.dtype, device=x.device)
            torch.add(delta, mu, alpha=lam / b, out=d_head[:, :k])
            d_xi = delta.mul_(std * eps).add_(xi.exp() - 1.0, alpha=lam / b).mul_(0.5)
            d_head[:, k:] = d_xi.mul_((xi_raw >= lo) & (xi_raw <= hi))
            delta = d_head
    pairs = list(zip(params, grads, strict=True))
    if grad_s is not None:
        pairs.append((s, grad_s))
    return terms, pairs
