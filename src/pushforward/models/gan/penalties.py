"""Penalties on the critic's slope with respect to its input, added to the critic's loss.

* ``gp`` (Gulrajani et al., 2017, "Improved training of Wasserstein GANs"): E[(‖∇D(x̂)‖₂ − 1)²]
  at random interpolates x̂ = εx + (1 − ε)g(z), ε ~ U[0, 1], which keeps the critic near
  1-Lipschitz between the data and the samples (it also helps the non-saturating GAN: Fedus et
  al., 2018, "Many paths to equilibrium");
* ``r1`` (Mescheder et al., 2018, "Which training methods for GANs do actually converge?"):
  E[‖∇D(x)‖₂²] / 2 at the data, zero-centred, which stops the critic from growing slopes there
  that push the generator past the target and back.

Each takes the critic (P, c) → (P,), the real and fake rows (P, c) as the critic sees them, and
the ``generator`` and ``shard`` its random draws come from; it returns a scalar differentiable in
the critic's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pushforward.measures import draw
from pushforward.train import Shard, draw_rows

__all__ = ["PENALTIES", "gradient_penalty", "r1_penalty"]


def _input_gradient(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Return ∇ₓ D(x) (P, c) for each row of x, differentiable in the critic's parameters when
    gradients are enabled; under ``torch.no_grad`` it is computed without a graph."""
    train = torch.is_grad_enabled()
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=train)
    return grad


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> Tensor:
    """Return E[(‖∇D(x̂)‖₂ − 1)²], a scalar, at x̂ = εx + (1 − ε)x̃ between real x and fake x̃ (P, c).

    Gulrajani et al.'s penalty. ε ~ U[0, 1] is one draw per row from ``generator``
    (``torch.rand(P, 1)``; under torchrun this process's rows of the whole batch's draws).
    """

    def uniform(m: int) -> Tensor:
        return draw(torch.rand, m, 1, generator=generator, device=real.device, dtype=real.dtype)

    eps = draw_rows(uniform, real.shape[0], shard)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()  # (P, c)
    return (_input_gradient(critic, x_hat).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> Tensor:
    """Return E[‖∇D(x)‖₂²] / 2, a scalar, at the real rows x (P, c): Mescheder et al.'s R1.

    ``fake``, ``generator`` and ``shard`` are unused (R1 draws nothing).
    """
    return 0.5 * _input_gradient(critic, real).pow(2).sum(dim=1).mean()


PENALTIES: dict[str, Callable[..., Tensor]] = {"gp": gradient_penalty, "r1": r1_penalty}
"""The penalties by name (see the module docstring)."""
