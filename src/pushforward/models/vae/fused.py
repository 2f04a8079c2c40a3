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
  and δ ← act'(·) ⊙ (δ W) for the layer below (the MLP passes the GAN's step shares:
  :mod:`pushforward.nets.fused`);
* at z = μ + e^{ξ/2} ε: ∂/∂μ = δ_z + λ μ / B and ∂/∂ξ = ½ δ_z ⊙ (z − μ) + λ (e^ξ − 1) / (2B),
  zero where ξ was clamped to the log-variance range;
* with a VampPrior p(z) = (1/K) Σ_k N(z; μ_k, e^{ξ_k}), (μ_k, ξ_k) the encoder's head at the
  pseudo-inputs u_k, the encoder takes the batch and the K pseudo-inputs in one pass, and
  KL_b = log q(z_b | x_b) − log p(z_b) at the draw. With w_bk the responsibilities (softmax over
  k of log N(z_b; μ_k, e^{ξ_k})) and A_bkj = (z_bj − μ_kj) e^{−ξ_kj}: −log p adds λ/B Σ_k w_bk A_bkj
  to δ_z, and gives the components ∂/∂μ_kj = −(λ/B) Σ_b w_bk A_bkj and
  ∂/∂ξ_kj = −(λ/2B) Σ_b w_bk (A_bkj (z_bj − μ_kj) − 1); log q(z | x) at z = μ + e^{ξ/2} ε gives
  ∂/∂μ = 0 and ∂/∂ξ = −λ/(2B). The components' gradients run back through the encoder with the
  batch's, and on to the pseudo-inputs.

:meth:`pushforward.vae.VAE.manual_gradients` hands the gradients to the training step, which
sets them as the parameters' ``.grad`` and steps the optimiser: no autograd graph is built at all
(nor are module or gradient hooks run: a hooked model takes autograd).
The noise ε is drawn from the run's generator where the autograd loss draws it, so a run takes
the same random numbers either way, and the two agree to rounding (the tests compare every
gradient with autograd's). Conv nets, free bits, the flow prior, autocast, torchrun, stacked seeds
and subclasses that change the loss take autograd. On points, the VampPrior's step written out
takes about 0.8 of autograd's time (0.71 against 0.89 CPU s an epoch of ring8 on a 2-core AMD
EPYC with AVX2; BENCHMARKS.md, "the slow host itself"): most
of what is left is the encoder's pass over the K pseudo-inputs, which the prior needs every step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.models.vae.posterior import LOGVAR_RANGE, posterior_log_prob
from pushforward.models.vae.trained_prior import (
    VampPrior,
    component_log_probs,
    mixture_logsumexp_,
)
from pushforward.nets import (
    gaussian_kl_terms,
    negative_log_likelihood,
    reconstruction,
    reconstruction_grad,
)
from pushforward.nets.fused import (
    FUSED_ACTIVATIONS,
    backward,
    forward,
    hooked,
    plain_mlp,
    trainable,
)
from pushforward.train import autocast_enabled

__all__ = ["FUSED_ACTIVATIONS", "fusable", "parameters", "vae_loss_and_gradients"]


def fusable(vae: Any, x: Tensor) -> bool:
    """Whether :func:`vae_loss_and_gradients` computes ``vae.loss(x)`` and its gradients for this
    model and batch: MLP encoder and decoder with a known activation, every parameter theirs (or
    the learned log-scale, or a VampPrior's pseudo-inputs: the flow prior takes autograd),
    trainable and float32, no hooks on the nets or their weights (the hand-written step runs
    neither), no free bits, float32 data without autocast. (Overrides of the loss in a subclass
    are :meth:`VAE.manual_gradients`' to see.) Called every step: cheap."""
    if x.dim() != 2 or x.dtype != torch.float32 or vae.config.free_bits != 0:
        return False
    enc, dec = vae.encoder, vae.decoder
    if not (plain_mlp(enc) and plain_mlp(dec)):
        return False
    if autocast_enabled(x.device) or hooked(vae):
        return False
    seen = sum(len(m._parameters) for net in (enc, dec) for m in net)  # plain: no nesting
    scale = vae.log_scale
    if isinstance(scale, torch.nn.Parameter):
        if not trainable(scale):
            return False
        seen += 1
    if vae.prior_is_trained:  # a VampPrior, whose only parameter is its pseudo-inputs (K, d)
        prior = vae.prior_net
        if type(prior) is not VampPrior or hooked(prior) or prior._modules:
            return False
        if not trainable(prior.pseudo_inputs):
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
    nets' weights and biases in :func:`parameters`' order, then the learned log-scale if any,
    then a VampPrior's pseudo-inputs) for ``vae.loss`` on the batch x (B, d) with the noise
    ε (B, k) and KL weight λ, without autograd (see the module's docstring). Call only where
    :func:`fusable` holds."""
    s = vae.log_scale
    b = x.shape[0]
    u = vae.prior_net.pseudo_inputs if vae.prior_is_trained else None  # (K, d)

    # the encoder takes the batch and, below it, a VampPrior's pseudo-inputs: one pass
    h, enc_tape = forward(vae.encoder, x if u is None else torch.cat([x, u]))
    head = _Head(h, b, eps)  # the (μ, ξ) head: sample z
    o, dec_tape = forward(vae.decoder, head.z)
    rec = _reconstruction(vae.likelihood.family, vae.likelihood.trains_on_nll, x, o, s) / b
    kl = head.kl() / b
    terms = {"loss": rec + lam * kl, "reconstruction": rec, "kl": kl}

    delta, grad_s = _output_delta(vae, x, o, s)
    dz, dec_grads = backward(vae.decoder, dec_tape, delta, inputs=True)
    # through the sampling step to the (μ, ξ) head(s); the pseudo-inputs are the encoder's
    # inputs below the batch
    rows = False if u is None else slice(b, None)
    grad_u, enc_grads = backward(vae.encoder, enc_tape, head.backward(dz, lam), inputs=rows)
    pairs = enc_grads + dec_grads
    if grad_s is not None:
        pairs.append((s, grad_s))
    if grad_u is not None:
        pairs.append((u, grad_u))
    return terms, pairs


def _output_delta(vae: Any, x: Tensor, o: Tensor, s: Tensor) -> tuple[Tensor, Tensor | None]:
    """Return ∂loss/∂o (B, d) for the decoder's output o and the gradient of the learned
    log-scale s (None when s is not learned)."""
    family, nll = vae.likelihood.family, vae.likelihood.trains_on_nll
    b = x.shape[0]
    grad_s = None
    learned = isinstance(s, torch.nn.Parameter) and s.requires_grad
    if family == "bce" or not nll:
        delta = reconstruction_grad(family, x, o)
    elif family == "l2":
        r = o - x
        inv = torch.exp(-2 * s)
        delta = r * inv
        if learned:
            grad_s = (1.0 - r.pow(2) * inv).sum(0) / b
    else:
        r = o - x
        inv = torch.exp(-s)
        delta = torch.sign(r) * inv
        if learned:
            grad_s = (1.0 - r.abs() * inv).sum(0) / b
    if grad_s is not None and not s.dim():
        grad_s = grad_s.sum()
    return delta.mul_(1.0 / b), grad_s


class _Head:
    """The encoder's (μ, ξ) head on the batch's B rows, z = μ + e^{ξ/2} ε, the KL term and its
    backward to the head; with a VampPrior, the head's rows below the batch are the prior's
    components (μ_u, ξ_u) (K, k), at the pseudo-inputs."""

    def __init__(self, head: Tensor, b: int, eps: Tensor):
        lo, hi = LOGVAR_RANGE
        self.k = k = head.shape[1] // 2
        self.b, self.eps = b, eps
        self.mu, xi_raw = head[:b, :k], head[:b, k:]
        self.keep = (xi_raw >= lo) & (xi_raw <= hi)  # where ξ was not clamped: its gradient
        self.xi = xi_raw.clamp(lo, hi)
        self.std = torch.exp(0.5 * self.xi)
        self.z = torch.addcmul(self.mu, self.std, eps)
        self.vamp = head.shape[0] > b
        if self.vamp:
            self.mu_u, xi_u_raw = head[b:, :k], head[b:, k:]
            self.keep_u = (xi_u_raw >= lo) & (xi_u_raw <= hi)
            self.xi_u = xi_u_raw.clamp(lo, hi)

    def kl(self) -> Tensor:
        """Σ_b KL_b: in closed form under N(0, I); under a VampPrior log q(z | x) − log p(z) at
        the draw, log p(z_b) = logsumexp_k log N(z_b; μ_k, e^{ξ_k}) − log K, whose softmax
        weights w (B, K) the backward keeps."""
        if not self.vamp:
            return gaussian_kl_terms(self.mu, self.xi).sum()
        self.w = component_log_probs(self.z, self.mu_u, self.xi_u)  # (B, K)
        lse = mixture_logsumexp_(self.w, weights=True)  # w: the responsibilities, in place
        log_p = lse - math.log(self.mu_u.shape[0])
        return (posterior_log_prob(self.eps, self.xi) - log_p).sum()

    def backward(self, dz: Tensor, lam: float) -> Tensor:
        """Return ∂loss/∂head ((B [+ K]), 2k) from ∂loss/∂z (B, k) through the decoder."""
        b, k, c = self.b, self.k, lam / self.b
        rows = b + (self.mu_u.shape[0] if self.vamp else 0)
        d_head = torch.empty(rows, 2 * k, dtype=dz.dtype, device=dz.device)
        if not self.vamp:  # ∂KL/∂μ = μ, ∂KL/∂ξ = (e^ξ − 1)/2
            torch.add(dz, self.mu, alpha=c, out=d_head[:, :k])
            d_xi = dz.mul_(self.std * self.eps).add_(self.xi.exp() - 1.0, alpha=c).mul_(0.5)
            d_head[:, k:] = d_xi.mul_(self.keep)
            return d_head
        # −log p(z_b): with A_bkj = (z_bj − μ_kj) e^{−ξ_kj}, ∂/∂z_bj = Σ_k w_bk A_bkj,
        # ∂/∂μ_kj = −Σ_b w_bk A_bkj, ∂/∂ξ_kj = −½ Σ_b w_bk (A_bkj (z_bj − μ_kj) − 1);
        # log q(z | x) at z = μ + e^{ξ/2} ε: ∂/∂μ = 0, ∂/∂ξ = −½ (through z and directly)
        w, inv = self.w, torch.exp(-self.xi_u)
        mass = w.sum(0)  # (K,)
        for j in range(k):
            diff = self.z[:, j : j + 1] - self.mu_u[:, j]  # (B, K)
            wa = diff.mul(inv[:, j]).mul_(w)
            dz[:, j].add_(wa.sum(1), alpha=c)
            d_head[b:, j] = wa.sum(0).mul_(-c)
            d_head[b:, k + j] = wa.mul_(diff).sum(0).sub_(mass).mul_(-0.5 * c)
        d_head[:b, :k] = dz
        d_head[:b, k:] = dz.mul(self.std * self.eps).sub_(c).mul_(0.5).mul_(self.keep)
        d_head[b:, k:].mul_(self.keep_u)
        return d_head
