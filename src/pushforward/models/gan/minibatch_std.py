"""The minibatch-standard-deviation feature: a critic that sees how spread out its batch is.

Karras et al. (2018), "Progressive growing of GANs" (ProGAN), section 3: before the critic's last
layer, take the standard deviation of each hidden feature over the batch, average those into one
number, and append it to every row as one more feature. A generator whose samples are too alike
(collapsed, or spread less than the data) then makes batches whose feature is smaller than real
batches', which the critic's last layer can tell apart.

The critic scores a batch of real rows and a batch of generated rows in separate calls, so the
feature of a real row is computed over real rows only and that of a generated row over generated
rows only. The score of one row depends on the whole batch (the input gradients of the penalties
include that dependence). Under torchrun the feature is taken over this process's rows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pushforward.core import ConfigError
from pushforward.nets import MLP

__all__ = ["MinibatchStdCritic", "minibatch_std"]

EPS = 1e-8
"""Added to each feature's variance before the square root (ProGAN's ε), so that the gradient of
the feature stays finite on a batch of identical rows."""


def minibatch_std(h: Tensor) -> Tensor:
    """Return the batch's mean feature standard deviation as a column (B, 1) for features h (B, F).

    s = (1/F) Σ_f √(Var_b h[b, f] + ε), with the biased (1/B) variance over the B rows, the same
    number in every row (ProGAN's group size taken as the whole batch).
    """
    if h.dim() != 2 or h.shape[0] < 2:
        raise ConfigError(
            f"the minibatch-std feature needs a batch of at least 2 rows (B, F), got "
            f"{tuple(h.shape)}"
        )
    var = h.var(dim=0, unbiased=False)  # (F,)
    s = torch.sqrt(var + EPS).mean()  # ()
    return s.expand(h.shape[0], 1)


class MinibatchStdCritic(nn.Module):
    """An MLP critic (B, n_in) → (B, 1) with the minibatch-std feature before its last layer.

    ``body`` is the MLP without its last affine layer (Linear, activation, …, activation), giving
    features h (B, F); the head scores [h, s] (B, F + 1) with s = :func:`minibatch_std` (h).

    Args:
        n_in: the critic's input width (m·d numbers for packs of m rows of dimension d).
        hidden: the hidden widths, at least one.
        activation: the hidden layers' activation (a key of :data:`~pushforward.nets.ACTIVATIONS`).
    """

    def __init__(self, n_in: int, hidden: list[int], *, activation: str = "relu"):
        super().__init__()
        if not hidden:
            raise ConfigError("the minibatch-std feature needs a critic with a hidden layer")
        mlp = MLP(n_in, hidden, 1, activation=activation)
        self.body = nn.Sequential(*list(mlp)[:-1])
        self.head = nn.Linear(hidden[-1] + 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)  # (B, F)
        return self.head(torch.cat([h, minibatch_std(h)], dim=1))  # (B, 1)
