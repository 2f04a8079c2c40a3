"""Differentiable augmentation of a critic's images (Zhao et al. 2020, DiffAugment).

A critic trained on a few thousand images learns them by heart: it tells the training digits
from everything else, and its verdict stops guiding the generator. DiffAugment shows the critic
every image, real and generated alike, through the same random transformation T, and trains the
game D∘T. T is differentiable in the image, so the generator's gradient flows through it; and
since the real and generated images are transformed alike, T does not move the target: g#μ = p
still wins the game (unlike augmenting the real images alone, which teaches g the augmented
digits).

Each transformation takes images x (P, s·s) (rows of square images of side s) and the random
draws it needs, u (P, 2) in [0, 1), one row per image, from ``draw(P)`` (the caller's generator;
under torchrun, this process's rows of the whole batch's draws), and returns the transformed
images (P, s·s):

- ``translation``: each image moved by its own integer shift of up to s/8 pixels along each axis,
  filled with zeros (the background of digits);
- ``cutout``: a square of half the side, at a random centre, set to zero.

:data:`AUGMENTS` names the policies; ``translation,cutout`` applies both, in that order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUGMENTS", "augment", "cutout", "translation"]

# draw(P) -> a (P, 2) tensor of U[0, 1) numbers, one row per image
Draw = Callable[[int], Tensor]


def _side(x: Tensor) -> int:
    side = round(x.shape[1] ** 0.5)
    if side * side != x.shape[1]:
        raise ValueError(f"augmentation needs square images, got rows of {x.shape[1]} values")
    return side


def translation(x: Tensor, u: Tensor, *, ratio: float = 0.125) -> Tensor:
    """Return the images x (P, s·s) each moved by (⌊u·(2m+1)⌋ − m) pixels down and right, with
    u (P, 2) in [0, 1) and m = ⌊s·ratio + ½⌋ the largest shift; what moves in is 0."""
    p, side = x.shape[0], _side(x)
    m = int(side * ratio + 0.5)
    shift = (u * (2 * m + 1)).long().clamp_(0, 2 * m) - m  # (P, 2), each in −m..m
    padded = F.pad(x.reshape(p, side, side), (m, m, m, m))  # (P, s + 2m, s + 2m)
    grid = torch.arange(side, device=x.device) + m
    rows = (grid[None, :] - shift[:, :1]).unsqueeze(2)  # (P, s, 1): the source row of each row
    cols = (grid[None, :] - shift[:, 1:]).unsqueeze(1)  # (P, 1, s)
    batch = torch.arange(p, device=x.device)[:, None, None]
    return padded[batch, rows, cols].reshape(p, side * side)


def cutout(x: Tensor, u: Tensor, *, ratio: float = 0.5) -> Tensor:
    """Return the images x (P, s·s) with a square of side c = ⌊s·ratio + ½⌋ set to 0, centred at
    ⌊u·(s + 1 − c mod 2)⌋ (u (P, 2) in [0, 1)), clipped at the image's edges."""
    p, side = x.shape[0], _side(x)
    c = int(side * ratio + 0.5)
    centre = (u * (side + (1 - c % 2))).long()  # (P, 2)
    grid = torch.arange(side, device=x.device)
    lo = centre - c // 2
    inside_r = (grid[None, :] >= lo[:, :1]) & (grid[None, :] < lo[:, :1] + c)  # (P, s)
    inside_c = (grid[None, :] >= lo[:, 1:]) & (grid[None, :] < lo[:, 1:] + c)
    keep = ~(inside_r[:, :, None] & inside_c[:, None, :])  # (P, s, s)
    return x * keep.reshape(p, side * side).to(x.dtype)


AUGMENTS: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], ...]] = {
    "none": (),
    "translation": (translation,),
    "cutout": (cutout,),
    "translation,cutout": (translation, cutout),
}


def augment(policy: str, x: Tensor, draw: Draw) -> Tensor:
    """Return x (P, s·s) through the transformations of ``policy`` (a key of :data:`AUGMENTS`),
    each with its own draws ``draw(P)`` (P, 2)."""
    for op in AUGMENTS[policy]:
        x = op(x, draw(x.shape[0]).to(x.device, x.dtype))
    return x
