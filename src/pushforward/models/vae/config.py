"""The settings of the VAE (:class:`VAEConfig`), each declared once, and the benchmarked defaults
they take by the kind of data (:data:`RECOMMENDED_POINTS` on points)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pushforward.core import ConfigError, setting
from pushforward.models.vae.likelihoods import KL_SCHEDULES, LIKELIHOODS
from pushforward.models.vae.prior import MAX_PRIOR_COMPONENTS, PRIORS
from pushforward.models.vae.trained_prior import TRAINED_PRIORS
from pushforward.nets import ACTIVATIONS, CONV_WIDTHS, MAX_LATENT, MAX_WIDTH, NetSettings

if TYPE_CHECKING:
    from pushforward.models.vae.model import VAE

__all__ = ["RECOMMENDED_POINTS", "VAEConfig"]


def _in_unit_interval(x: Tensor) -> bool:
    return bool(x.min() >= 0) and bool(x.max() <= 1)


RECOMMENDED_POINTS: dict[str, dict[str, Any]] = {
    "model": {"prior": "vamp", "prior_components": 200, "hidden": [256, 256]},
    "train": {"epochs": 60, "lr_schedule": "cosine"},
}
"""The benchmarked setting on points (ring8 and grid25, ``benchmarks/fidelity.py``; BENCHMARKS.md,
"The VAE on points", has what each lever gave): a VampPrior of 200 pseudo-inputs (50 left the
modes' weights uneven on grid25), two hidden layers of 256, 60 epochs with the learning rate
decaying to 0 on a cosine."""

PRIOR_COMPONENTS = 50
"""The mixture's components, or the VampPrior's pseudo-inputs, where neither the user nor the
kind of data says (on images: the ``gmm`` sampler's, BENCHMARKS.md, "Images")."""


@dataclass
class VAEConfig(NetSettings):
    """Settings of a :class:`VAE` (``pushforward fit vae``), the benchmarked defaults
    (BENCHMARKS.md, "VAE quality"); :meth:`build` fills ``dim``, ``image_shape`` and the loss,
    σ and prior left open from the data.

    ``kl_schedule``: ``constant``, ``linear`` (warm up from 0 over ``kl_warmup`` epochs) or
    ``cyclical`` (that warm-up every ``kl_warmup`` epochs, ramping over its first half);
    ``free_bits``: the batch-mean KL per latent unit below which it is not penalised (Kingma et
    al., 2016; reported KL terms are always the true ones).
    """

    mlp_widths = (512,)

    dim: int | None = setting(None, "data dimension d", minimum=1, derived=True)
    latent: int = setting(2, "latent dimension k", minimum=1, maximum=MAX_LATENT)
    loss: str | None = setting(
        None, "reconstruction term: bce, l2, l1, gaussian, laplace (default: bce for data in "
        "[0, 1], else gaussian with learned σ)", choices=LIKELIHOODS, what="reconstruction loss",
    )  # fmt: skip
    hidden: list[int] | None = setting(
        None, "hidden widths, e.g. 512,256 (default 512, on points 256,256; conv: channel "
        "counts, default " + ",".join(map(str, CONV_WIDTHS)) + ")", minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    activation: str = setting(
        "silu", "relu, elu, gelu, silu, tanh, ...", choices=ACTIVATIONS, what="activation"
    )
    sigma: float | None = setting(None, "σ (or b) of the gaussian/laplace likelihood", above=0)
    learn_sigma: bool = setting(False, "learn σ per data dimension (gaussian/laplace)")
    kl_weight: float = setting(1.0, "λ, the weight of the KL term", minimum=0)
    kl_schedule: str = setting(
        "constant", "constant, linear (warm-up) or cyclical", choices=KL_SCHEDULES,
        what="KL schedule",
    )  # fmt: skip
    kl_warmup: float = setting(10.0, "KL warm-up (or cycle) length in epochs", above=0)
    free_bits: float = setting(0.0, "free bits per latent dimension, in nats", minimum=0)
    prior: str | None = setting(
        None, "prior p(z): normal (N(0, I)), gmm (trained with N(0, I), sampled from a Gaussian "
        "mixture fitted to the codes after training), vamp (VampPrior) or flow (a spline flow), "
        "both trained with the nets (default: gmm on images, vamp on points)", choices=PRIORS,
        what="prior",
    )  # fmt: skip
    prior_components: int | None = setting(
        None, "components of the gmm sampler, or pseudo-inputs of the vamp prior (default 50; "
        "on points 200)", minimum=1, maximum=MAX_PRIOR_COMPONENTS,
    )  # fmt: skip
    image_shape: tuple[int, int] | None = setting(
        None, "(h, w) of image data (conv nets, figures)", minimum=1, derived=True
    )

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """Runs stored before the prior existed sampled from N(0, I); before its size depended
        on the data, it had 50 components."""
        return {"prior": "normal", "prior_components": PRIOR_COMPONENTS}

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the network (:meth:`NetSettings.kind_defaults`) and the prior: on images the
        fitted mixture as the sampler, where it is measured to give much better samples
        (BENCHMARKS.md, "Images"); on points :data:`RECOMMENDED_POINTS` (a VampPrior)."""
        if kind == "images":
            return {**super().kind_defaults(kind), "prior": "gmm",
                    "prior_components": PRIOR_COMPONENTS}  # fmt: skip
        points = {**super().kind_defaults(kind), **copy.deepcopy(RECOMMENDED_POINTS["model"])}
        if self.prior not in (None, points["prior"]):  # the 200 were measured for the VampPrior
            points["prior_components"] = PRIOR_COMPONENTS
        return points

    def check(self) -> None:
        if self.free_bits > 0 and self.prior in TRAINED_PRIORS:
            raise ConfigError(
                f"free_bits apply to the KL per latent unit to N(0, I), which prior "
                f"{self.prior!r} has not; use free_bits = 0 or prior 'normal' or 'gmm'"
            )
        if (self.sigma is not None or self.learn_sigma) and self.loss is not None:
            if not LIKELIHOODS[self.loss].trains_on_nll:
                raise ConfigError(
                    f"sigma and learn_sigma apply to the 'gaussian' and 'laplace' losses, "
                    f"not {self.loss!r}"
                )

    def filled(self) -> VAEConfig:
        """Return a copy with the settings left open that do not depend on the data filled with
        the lecture's: the Bernoulli likelihood ``bce``, the prior N(0, I), an MLP of the
        model's widths."""
        net = self.net_config()
        fill = {"loss": self.loss or "bce", "prior": self.prior or "normal",
                "prior_components": self.prior_components or PRIOR_COMPONENTS}  # fmt: skip
        return dataclasses.replace(self, **fill, net=net["kind"], hidden=net["hidden"])

    def for_data(self, ds: Any) -> VAEConfig:
        """Return a copy filled for the data set ``ds``: its dimension and image shape, the
        kind's defaults, and, left open, the likelihood (Bernoulli for data in [0, 1], else a
        Gaussian of learned σ started at a tenth of the data's spread) and the prior."""
        cfg = self.resolve(ds.kind)
        loss = cfg.loss or ("bce" if _in_unit_interval(ds.x) else "gaussian")
        learn_sigma = cfg.learn_sigma or (
            cfg.loss is None and loss == "gaussian" and cfg.sigma is None
        )
        sigma = cfg.sigma
        if sigma is None and learn_sigma:
            # started at 1, a Gaussian of learned σ explains low-dimensional data (ring8,
            # grid25) before the latent does, and the posterior collapses onto the prior
            sigma = 0.1 * max(float(ds.x.std(0).mean()), 1e-3)
        return dataclasses.replace(
            cfg, dim=ds.dim, image_shape=ds.image_shape, loss=loss, sigma=sigma,
            learn_sigma=learn_sigma,
            prior_components=min(cfg.prior_components or PRIOR_COMPONENTS, ds.x.shape[0]),
        )  # fmt: skip

    def build(self, ds: Any) -> VAE:
        """Return a :class:`~pushforward.models.vae.VAE` for the data set ``ds``."""
        from pushforward.models.vae.model import VAE  # the model module imports this one

        return VAE(self.for_data(ds))
