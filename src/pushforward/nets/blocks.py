"""Network blocks shared by every model: MLPs and small convolutional encoders and decoders.

An encoder maps data rows (B, d) to features (B, m); a decoder maps latents (B, k) to outputs
(B, d). Image data stay flattened (B, h·w) at the interface; convolutional blocks reshape inside.
Blocks are built from a small JSON-able :class:`NetConfig`, so a saved run can rebuild them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.core import ConfigError, ModelConfig, Settings, lookup, setting

__all__ = [
    "ACTIVATIONS",
    "CONV_WIDTHS",
    "MAX_LATENT",
    "MAX_WIDTH",
    "MLP",
    "NET_KINDS",
    "NET_WIDTHS",
    "ConvDecoder",
    "ConvEncoder",
    "DecoderLayer",
    "NetConfig",
    "NetSettings",
    "TiedDecoder",
    "apply_layers",
    "as_net_config",
    "build_decoder",
    "build_encoder",
    "check_sizes",
    "decoder_program",
    "square_side",
]

MAX_WIDTH = 65_536  # a wider layer is a typo; it would try to allocate gigabytes
MAX_LATENT = 65_536

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "leaky_relu_0.2": functools.partial(nn.LeakyReLU, 0.2),  # DCGAN's critic
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


DecoderLayer = tuple
"""One step of a decoder written as a portable program (:meth:`pushforward.contract.Model.
decoder_layers`): ``("linear", W (out, in), b (out,))`` is h ↦ W h + b; ``("activation", name)``
applies the elementwise function ``ACTIVATIONS[name]`` with PyTorch's default constants
(leaky_relu's slope 0.01, elu's α = 1, the exact erf GELU); ``("affine", s (m,), c (m,))`` is
h ↦ c + s ⊙ h."""


def apply_layers(layers: Sequence[DecoderLayer], z: Tensor) -> Tensor:
    """Return the output (n, m) of a portable decoder program run on z (n, k), in PyTorch."""
    h = z
    for layer in layers:
        if layer[0] == "linear":
            h = F.linear(h, layer[1].to(h.dtype), layer[2].to(h.dtype))
        elif layer[0] == "activation":
            h = lookup(ACTIVATIONS, layer[1], what="activation")()(h)
        elif layer[0] == "affine":
            h = layer[2].to(h.dtype) + layer[1].to(h.dtype) * h
        else:
            known = "activation, affine, linear"
            raise ConfigError(f"unknown decoder step {layer[0]!r}; known: {known}")
    return h


CONV_WIDTHS: list[int] = [64, 128]
"""The channel counts of a conv network when none are given: DCGAN's size on 28×28 digits
(28 → 14 → 7 with 64 and 128 channels), for every model that builds conv nets (BENCHMARKS.md,
"Images")."""

NET_KINDS: dict[str, str] = {
    "mlp": "a multilayer perceptron (hidden: layer widths; default 400)",
    "conv": "stride-2 convolutions for square images (hidden: channel counts; default "
    + ",".join(map(str, CONV_WIDTHS))
    + ")",
}


def _check_allowing_no_hidden_layer(settings: Settings) -> None:
    """Check ``settings`` (:meth:`Settings.__post_init__`), taking an empty ``hidden`` list, which
    the settings machinery refuses, as what it means here: no hidden layer, a single affine map."""
    affine = settings.hidden is not None and len(settings.hidden) == 0  # type: ignore[attr-defined]
    if affine:
        settings.hidden = None  # type: ignore[attr-defined]
    Settings.__post_init__(settings)
    if affine:
        settings.hidden = []  # type: ignore[attr-defined]


NET_WIDTHS: dict[str, tuple[int, ...]] = {"mlp": (400,), "conv": tuple(CONV_WIDTHS)}
"""The hidden widths of a network of each kind when none are given."""


@dataclass
class NetConfig(Settings):
    """How to build an encoder or decoder: ``kind`` 'mlp' or 'conv', hidden widths, activation.

    For 'conv', ``hidden`` are the channel counts of the stride-2 convolutions (default
    :data:`CONV_WIDTHS`) and the data must be square images (28×28 or 8×8, say). An empty
    ``hidden`` makes an MLP a single affine map.
    """

    kind: str = setting("mlp", "network kind", choices=NET_KINDS, what="network kind")
    hidden: list[int] | None = setting(
        None, "hidden widths (conv: channel counts; default by kind, NET_WIDTHS)",
        minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    activation: str = setting("relu", "activation", choices=ACTIVATIONS, what="activation")

    def __post_init__(self) -> None:
        _check_allowing_no_hidden_layer(self)
        if self.hidden is None:
            self.hidden = list(NET_WIDTHS[self.kind])


class MLP(nn.Sequential):
    """A multilayer perceptron (B, in_dim) → (B, out_dim): Linear, activation, …, Linear."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        *,
        activation: str = "relu",
    ):
        act = lookup(ACTIVATIONS, activation, what="activation")
        self.activation = activation
        widths = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(act())
        super().__init__(*layers)

    @property
    def linears(self) -> list[nn.Linear]:
        """The affine layers, input side first."""
        return [m for m in self if isinstance(m, nn.Linear)]

    def portable(self) -> list[DecoderLayer]:
        """Return the network as a portable program (see :data:`DecoderLayer`)."""
        linears = self.linears
        out: list[DecoderLayer] = []
        for i, lin in enumerate(linears):
            out.append(("linear", lin.weight.detach(), lin.bias.detach()))
            if i < len(linears) - 1:
                out.append(("activation", self.activation))
        return out


class TiedDecoder(nn.Module):
    """Decoder (B, k) → (B, d) that reuses the transposes of an MLP encoder's weight matrices.

    Layer i of the decoder is x ↦ W_{L−i}ᵀ x + c_i with its own bias c_i; activations sit between
    layers as in the encoder. Only the biases are new parameters.
    """

    def __init__(self, encoder: MLP, *, activation: str = "relu"):
        super().__init__()
        self.encoder = [encoder]  # a list hides it from .parameters(): the weights are shared
        self.act = lookup(ACTIVATIONS, activation, what="activation")()
        self.activation = activation
        widths = [lin.in_features for lin in encoder.linears]
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in reversed(widths)])

    def forward(self, z: Tensor) -> Tensor:
        h = z
        linears = list(reversed(self.encoder[0].linears))
        for i, (lin, bias) in enumerate(zip(linears, self.biases, strict=True)):
            h = F.linear(h, lin.weight.t(), bias)
            if i < len(linears) - 1:
                h = self.act(h)
        return h

    def portable(self) -> list[DecoderLayer]:
        """Return the decoder as a portable program (see :data:`DecoderLayer`)."""
        linears = list(reversed(self.encoder[0].linears))
        out: list[DecoderLayer] = []
        for i, (lin, bias) in enumerate(zip(linears, self.biases, strict=True)):
            out.append(("linear", lin.weight.detach().t(), bias.detach()))
            if i < len(linears) - 1:
                out.append(("activation", self.activation))
        return out


def square_side(image_shape: Sequence[int] | None, dim: int) -> int:
    """Return the side s of square images (s, s) of dimension ``dim``, or raise ConfigError."""
    if image_shape is None or len(image_shape) != 2 or image_shape[0] != image_shape[1]:
        raise ConfigError(
            f"a conv network needs square images, got data of dimension {dim} "
            f"with image shape {image_shape}; use --net mlp"
        )
    return int(image_shape[0])


CHANNELS_LAST = torch.channels_last
"""The memory layout of the conv networks' activations (see BENCHMARKS.md, "Images")."""


class ConvEncoder(nn.Module):
    """Convolutional encoder (B, s·s) → (B, out_dim) for square grey images of side s.

    Stride-2 3×3 convolutions with the given channel counts, then a linear layer.
    """

    def __init__(
        self, side: int, out_dim: int, *, channels: Sequence[int] = (32, 64), activation="relu"
    ):
        super().__init__()
        act = lookup(ACTIVATIONS, activation, what="activation")
        self.side = side
        layers: list[nn.Module] = []
        c_in, s = 1, side
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), act()]
            c_in, s = c, (s + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * s * s, out_dim)
        self.to(memory_format=CHANNELS_LAST)

    def forward(self, x: Tensor) -> Tensor:
        # channels-last activations: oneDNN's convolutions run faster on them on CPU (8-12% of a
        # GAN step on digits, BENCHMARKS.md "Images")
        image = x.reshape(-1, 1, self.side, self.side).contiguous(memory_format=CHANNELS_LAST)
        h = self.conv(image)  # (B, C, s', s')
        return self.head(h.flatten(1))


class ConvDecoder(nn.Module):
    """Convolutional decoder (B, in_dim) → (B, s·s), mirroring :class:`ConvEncoder`."""

    def __init__(
        self, in_dim: int, side: int, *, channels: Sequence[int] = (32, 64), activation="relu"
    ):
        super().__init__()
        act = lookup(ACTIVATIONS, activation, what="activation")
        self.side = side
        sizes = [side]
        for _ in channels:
            sizes.append((sizes[-1] + 1) // 2)
        self.c0, self.s0 = channels[-1], sizes[-1]
        self.head = nn.Linear(in_dim, self.c0 * self.s0 * self.s0)
        layers: list[nn.Module] = [act()]
        chans = list(reversed(channels))
        outs = [*chans[1:], 1]
        targets = list(reversed(sizes[:-1]))
        s = self.s0
        for i, (c_in, c_out, target) in enumerate(zip(chans, outs, targets, strict=True)):
            pad = target - (2 * s - 1)  # output_padding so that sizes retrace the encoder's
            layers.append(
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad)
            )
            if i < len(chans) - 1:
                layers.append(act())
            s = target
        self.deconv = nn.Sequential(*layers)
        self.to(memory_format=CHANNELS_LAST)

    def forward(self, z: Tensor) -> Tensor:
        h = self.head(z).reshape(-1, self.c0, self.s0, self.s0)
        return self.deconv(h.contiguous(memory_format=CHANNELS_LAST)).flatten(1)

    def portable(self) -> None:
        """Return None: transposed convolutions are not written as a portable program."""
        return None


def decoder_program(decoder: nn.Module, *tail: DecoderLayer) -> list[DecoderLayer] | None:
    """Return a decoder built here (:func:`build_decoder`, :class:`TiedDecoder`) as a portable
    program followed by the ``tail`` steps (an output head), or None when it has none."""
    layers = decoder.portable()
    return None if layers is None else [*layers, *tail]


def as_net_config(net: NetConfig | dict | None) -> NetConfig:
    """Return ``net`` as a :class:`NetConfig` (from a dict of its fields, or the default)."""
    return net if isinstance(net, NetConfig) else NetConfig.from_dict(net or {})


def check_sizes(dim: int | None, latent: int) -> None:
    """Refuse a data dimension unset or below 1, or a latent dimension outside [1, MAX_LATENT]."""
    if dim is None:
        raise ConfigError(
            "dim must be set: the data dimension, which building the model from data fills in"
        )
    if dim < 1 or not 1 <= latent <= MAX_LATENT:
        raise ConfigError(
            f"dim and latent must be ≥ 1 (latent at most {MAX_LATENT:,}), "
            f"got dim={dim}, latent={latent}"
        )


def build_encoder(cfg: NetConfig, in_dim: int, out_dim: int, image_shape=None) -> nn.Module:
    """Return an encoder (B, in_dim) → (B, out_dim) as ``cfg`` describes."""
    if cfg.kind == "conv":
        side = square_side(image_shape, in_dim)
        return ConvEncoder(side, out_dim, channels=cfg.hidden, activation=cfg.activation)
    return MLP(in_dim, cfg.hidden, out_dim, activation=cfg.activation)


def build_decoder(cfg: NetConfig, in_dim: int, out_dim: int, image_shape=None) -> nn.Module:
    """Return a decoder (B, in_dim) → (B, out_dim), the mirror image of :func:`build_encoder`."""
    if cfg.kind == "conv":
        side = square_side(image_shape, out_dim)
        return ConvDecoder(in_dim, side, channels=cfg.hidden, activation=cfg.activation)
    return MLP(in_dim, list(reversed(cfg.hidden)), out_dim, activation=cfg.activation)


@dataclass
class NetSettings(ModelConfig):
    """The network settings that models built from encoders and decoders share.

    Left unset, ``net`` and ``hidden`` follow the kind of data (:meth:`kind_defaults`): the
    model's :attr:`image_net` on images and an MLP on points; then the model's
    :attr:`mlp_widths` for an MLP and :attr:`conv_widths` channels for a conv net, so that a conv
    net never takes MLP widths as channel counts.
    """

    mlp_widths: ClassVar[tuple[int, ...]] = (400,)
    """The model's hidden widths for an MLP when none are given."""
    conv_widths: ClassVar[tuple[int, ...]] = tuple(CONV_WIDTHS)
    """The model's channel counts for a conv net when none are given."""
    image_net: ClassVar[str] = "mlp"
    """The model's network kind on images when none is given."""

    net: str | None = setting(
        None, "network kind: mlp or conv (default by data kind)", choices=NET_KINDS,
        what="network kind",
    )  # fmt: skip
    hidden: list[int] | None = setting(
        None, "hidden widths, e.g. 512,256 (conv: channel counts; default by network kind)",
        minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    activation: str = setting(
        "relu", "relu, elu, gelu, silu, tanh, ...", choices=ACTIVATIONS, what="activation"
    )

    def __post_init__(self) -> None:
        _check_allowing_no_hidden_layer(self)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> Any:
        """Return the config a stored ``model.config`` describes, flattening the network that
        earlier releases stored nested (``"net": {"kind", "hidden", "activation"}``)."""
        d = dict(stored)
        if isinstance(d.get("net"), Mapping):
            net = NetConfig.from_dict(d["net"])
            d.update(net=net.kind, hidden=net.hidden, activation=net.activation)
        return super().from_stored(d)

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return ``net`` (the model's :attr:`image_net` on images, else ``mlp``) and ``hidden``
        (:attr:`mlp_widths` for an MLP, :attr:`conv_widths` for a conv net)."""
        net = self.net or (self.image_net if kind == "images" else "mlp")
        hidden = list(self.mlp_widths) if net == "mlp" else list(self.conv_widths)
        return {"net": net, "hidden": hidden}

    def net_config(self) -> dict[str, Any]:
        """Return the :class:`NetConfig` fields these settings describe (``net`` unset: mlp;
        ``hidden`` unset: the model's widths for that kind, as :meth:`kind_defaults`)."""
        kind = self.net or "mlp"
        widths = self.mlp_widths if kind == "mlp" else self.conv_widths
        hidden = list(widths) if self.hidden is None else self.hidden
        return {"kind": kind, "hidden": hidden, "activation": self.activation}
