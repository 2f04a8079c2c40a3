"""The flow-matching model: g#μ as the time-1 map of a learned ODE, with its exact log-likelihood
(the method: :mod:`pushforward.models.fm`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pushforward.core import (
    EVAL_BATCH,
    EXACT_LIKELIHOOD,
    ConfigError,
    DataError,
    ModelSpec,
    ResultKey,
    TrainingError,
    check_rows,
)
from pushforward.data import (
    Logit,
    Standardize,
    check_pixels_or_rows,
    dequantized,
    discrete_log_likelihood,
    fit_standardize,
    quantized,
)
from pushforward.measures import StandardNormal, likelihood_summary, standard_normal_log_prob
from pushforward.models.fm.config import (
    EXACT_TRACE_MAX_DIM,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    FlowMatchingConfig,
)
from pushforward.models.fm.coupling import OT_BLOCK, ot_pairing, stable_target
from pushforward.models.fm.fields import UNetField, VelocityField
from pushforward.models.fm.ode import divergence_rhs
from pushforward.nets import square_side
from pushforward.train import Trainable, full_precision

__all__ = ["HUTCHINSON_ESTIMATE", "SPEC", "TIME_POWER", "FlowMatching"]

HUTCHINSON_ESTIMATE = "unbiased estimate (Hutchinson)"
""":attr:`FlowMatching.likelihood_kind` when the trace is estimated: E[log p̂] = log p."""

TIME_POWER = 2
"""Training draws t = 1 − (1 − u)^TIME_POWER, u ~ U[0, 1]: any density of t with full support has
the same minimiser, the marginal field, and this one (density ∝ (1 − t)^(−1/2)) spends a fifth of
each batch within 0.04 of t = 1, where narrow modes are formed (powers 3 and 4 did worse:
BENCHMARKS.md, "Flow matching")."""


class FlowMatching(Trainable):
    """g#N(0, I_d) where g is the time-1 flow map of dx/dt = v_θ(t, x), trained by conditional
    flow matching; exact log-density by the instantaneous change of variables.

    Args:
        config: its settings (:class:`FlowMatchingConfig`, ``dim`` set; images, given
            ``image_shape``, are dequantised); kept, with the settings left to the kind of data
            filled in, as :attr:`config`.

    Declared capabilities: an exact density, an encoder (x ↦ x₀, the ODE backwards), generative,
    a motion in time (:meth:`motion`), trained by :func:`pushforward.train.fit`.
    """

    stacks = True  # loss(x, noise=…) or prepared: several seeds train as one stacked model

    evaluate_keys: ClassVar[dict[str, ResultKey]] = {
        "solver": ResultKey("ODE solver", "", "flow matching: the solver used to sample"),
        "steps": ResultKey("solver steps", ",", "flow matching: steps of a fixed-step solver"),
        "rtol": ResultKey("solver rtol", ".0e", "flow matching: the adaptive solver's rtol"),
        "atol": ResultKey("solver atol", ".0e", "flow matching: the adaptive solver's atol"),
        "max_nfe": ResultKey("solver budget", ",", "flow matching: most field evaluations a solve"),
        "likelihood": ResultKey(
            "likelihood is", "", "exact, or an unbiased estimate (Hutchinson's trace)"
        ),
        "likelihood_nfe": ResultKey(
            "likelihood evaluations",
            ",",
            "flow matching: field evaluations of the likelihood's ODE",
        ),
        "sampling_nfe": ResultKey(
            "sampling evaluations",
            ",",
            "flow matching: field evaluations of the last sampling solve",
        ),
    }
    """The keys of :meth:`evaluate` that only this model gives."""

    has_exact_density = True
    has_encoder = True
    generative = True
    has_motion = True
    trained = True
    sampling_options = ("solver", "steps", "rtol", "atol", "max_nfe")
    code_label = "x₀ = g⁻¹(x), the ODE backwards"

    config_class = FlowMatchingConfig

    def __init__(self, config: FlowMatchingConfig):
        super().__init__()
        self.config = config = config.filled()
        self.dim = self.latent = config.dim
        if config.net == "unet":
            side = square_side(config.image_shape, config.dim)
            self.field: nn.Module = UNetField(side, config.hidden)
        else:
            self.field = VelocityField(
                config.dim, config.hidden, activation=config.activation,
                frequencies=config.frequencies, features=config.features,
            )  # fmt: skip
        self.register_buffer("data_loc", torch.zeros(config.dim))
        self.register_buffer("data_scale", torch.ones(config.dim))
        self.last_nfe = 0

    @property
    def dequantize(self) -> bool:
        """Whether the data are 8-bit pixels, dequantised (images: ``image_shape`` set)."""
        return self.config.image_shape is not None

    def set_sampling(self, **options: Any) -> None:
        """Change the solver settings (:attr:`sampling_options`), checked as when fitting."""
        # the base refuses names that are not sampling settings, naming the allowed ones
        super().set_sampling(**{k: v for k, v in options.items() if k not in self.sampling_options})
        self.config = dataclasses.replace(self.config, **options)

    def sampling_settings(self) -> dict[str, Any]:
        """Return the current solver settings (:attr:`sampling_options`)."""
        return {name: getattr(self.config, name) for name in self.sampling_options}

    @property
    def latent_measure(self) -> StandardNormal:
        return StandardNormal(self.dim)

    # --- data in the field's units -------------------------------------------------------------

    def _check_data(self, x: object, name: str = "x") -> Tensor:
        return check_pixels_or_rows(x, name, dim=self.dim, pixels=self.dequantize, what="model")

    def prepare(self, x: Tensor) -> None:
        """Record the per-coordinate mean and standard deviation (d,) of the training data x
        (n, d), as the field sees them (dequantised images after the logit, their noise from a
        fixed seed; :func:`~pushforward.data.fit_standardize`); a coordinate that does not vary
        counts as of standard deviation 1."""
        x = self._check_data(x).detach().to(self.data_loc.dtype)
        if self.dequantize:
            noise = torch.Generator(device=x.device).manual_seed(0)
            x = Logit()(dequantized(x, generator=noise))
        fitted = fit_standardize(x)
        with torch.no_grad():
            self.data_loc.copy_(fitted.loc)
            self.data_scale.copy_(fitted.scale)

    def _to_field(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return the field's units u (n, d) of data y (n, d) (dequantised pixels for images)
        and log |det ∂u/∂y| (n,)."""
        standardize = Standardize(self.data_loc, self.data_scale)
        ladj = standardize.log_abs_det_jacobian(y, y)
        if self.dequantize:
            logit = Logit()
            w = logit(y)
            ladj = ladj + logit.log_abs_det_jacobian(y, w)
            y = w
        return standardize(y), ladj

    def _from_field(self, u: Tensor) -> Tensor:
        """Return the data (n, d) of field units u (n, d) (images: dequantised y ∈ (0, 1))."""
        y = Standardize(self.data_loc, self.data_scale).inv(u)
        return Logit().inv(y) if self.dequantize else y

    # --- training ------------------------------------------------------------------------------

    @property
    def prepares_batches(self) -> bool:
        """True with the OT coupling or the stable target: :meth:`prepare_batch` then does the
        weight-free part of a step (the draws, the pairing or the target), and
        :func:`~pushforward.train.fit` runs it for the next batches while the current one trains
        (:mod:`pushforward.prefetch`), on one intra-op thread fewer. The default runs on 2
        cores: 53 s, against 58–60 s in line on 2 threads, and 65 s with the target prepared
        beside a step that kept both threads (BENCHMARKS.md, "Flow matching")."""
        return self.config.coupling == "ot" or self.config.reference > 1

    def _draws(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """Return the weight-free half of a step on the data rows x (B, d): x₁ (B, d) in the
        field's units (dequantised images), x₀ (B, d) paired with them by the coupling, t (B,)
        and the regression's target u (B, d), all drawn from ``generator``."""
        device = generator.device if generator is not None else x.device
        with torch.no_grad():
            y = dequantized(x, generator=generator) if self.dequantize else x
            x1, _ = self._to_field(y.to(self.data_loc.dtype))
            x0 = torch.randn(x1.shape, generator=generator, device=device).to(x1)
            if self.config.coupling == "ot":
                x0 = x0[ot_pairing(x0, x1, block=OT_BLOCK)]
            # t = 1 − (1 − u)², density ∝ (1 − t)^(−1/2): a fifth of the batch within 0.04 of
            # t = 1, where the field must contract onto the data's narrowest features
            u = torch.rand(x1.shape[0], generator=generator, device=device).to(x1)
            t = 1 - (1 - u) ** TIME_POWER
            if self.config.reference > 1:
                target = stable_target(x1, x0, t, self.config.sigma, self.config.reference)
            else:
                target = x1 - (1 - self.config.sigma) * x0
        return x1, x0, t, target

    def prepare_batch(self, x: Tensor, *, generator: torch.Generator) -> tuple[Tensor, ...]:
        """Return x₁, x₀, t and the target of a step on the data rows x (B, d) (see
        :meth:`loss`), drawn from ``generator`` (a CPU generator): the OT pairing is computed
        here, so that :func:`~pushforward.train.fit` can overlap it with the previous step. The
        weights are not read."""
        return self._draws(x, generator)

    def draw_noise(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, ...]:
        """Return the draws :meth:`loss` makes on x (B, d) when nothing is prepared: x₁, x₀, t
        and the target, as :meth:`prepare_batch` gives them."""
        return self._draws(x, generator)

    def loss(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        epoch: float | None = None,
        prepared: tuple[Tensor, ...] | None = None,
        noise: tuple[Tensor, ...] | None = None,
    ) -> dict[str, Tensor]:
        """Return {'loss': E‖v(t, x_t) − u‖²/d, 'path_length'} on a batch x (B, d) of data rows
        x₁ (the flow-matching regression, per coordinate, in standardised units; u is the
        conditional target x₁ − (1 − σ)x₀ or the stable target, :func:`stable_target`). x₀ (paired
        by the coupling), t, the target and images' dequantisation come from ``prepared``
        (:meth:`prepare_batch`) or ``noise`` (:meth:`draw_noise`) when given, else from
        ``generator``."""
        if prepared is None:
            prepared = noise if noise is not None else self._draws(x, generator)
        x1, x0, t, target = prepared
        keep = 1 - (1 - self.config.sigma) * t[:, None]  # (B, 1): x₀'s share of x_t
        xt = t[:, None] * x1 + keep * x0
        loss = (self.field(t, xt) - target).square().mean()
        # the pairing's path length ‖x₁ − (1 − σ)x₀‖², whichever target is regressed on
        length = (x1 - (1 - self.config.sigma) * x0).square().sum(1).mean()
        return {"loss": loss, "path_length": length}

    def velocity(self, t: Tensor, u: Tensor) -> Tensor:
        """Return v(t, u) (B, d) in the field's units for t (B,) or a scalar and u (B, d)."""
        return self.field(t, u)

    # --- the ODE -------------------------------------------------------------------------------

    def _solve(self, rhs: Callable, y0: Any, times: Tensor, what: str) -> Any:
        """Integrate dy/dt = rhs(t, y) from y0 over ``times`` (T,) with the model's solver
        (:meth:`FlowMatchingConfig.solver_settings`); return y at every time (T, …) and set
        :attr:`last_nfe`."""
        out, self.last_nfe = self.config.solver_settings.solve(rhs, y0, times, what)
        return out

    def _flow(self, u: Tensor, t0: float, t1: float, what: str) -> Tensor:
        """Return the field units u (n, d) carried by the ODE from t0 to t1, in the weights'
        precision (never under autocast), by blocks of :data:`EVAL_BATCH` rows."""
        times = torch.tensor([t0, t1])
        nfe, out = 0, []
        with full_precision(u.device), torch.no_grad():
            for ub in u.to(self.data_loc.dtype).split(EVAL_BATCH):
                out.append(self._solve(self.velocity, ub, times, what)[-1])
                nfe += self.last_nfe
        self.last_nfe = nfe
        return torch.cat(out) if out else u.new_zeros(0, self.dim)

    def decode(self, z: Tensor) -> Tensor:
        """Return g(z) (n, d), the ODE from t = 0 to 1, for z (n, d) (images: the dequantised
        y ∈ (0, 1), before binning)."""
        z = check_rows(z, "z", dim=self.dim)
        return self._from_field(self._flow(z, 0.0, 1.0, "decode"))

    def encode(self, x: Tensor) -> Tensor:
        """Return x₀ = g⁻¹(x) (n, d), the ODE from t = 1 back to 0, for data x (n, d)."""
        u, _ = self._to_field(self._check_data(x).to(self.data_loc.dtype))
        return self._flow(u, 1.0, 0.0, "encode")

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Return n draws z ~ μ (n, d) from ``generator``, on the model's device."""
        return self.latent_measure.sample(n, generator=generator).to(self.data_loc)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws of g#N(0, I) (n, d) (images: 8-bit pixel values k/255);
        :attr:`last_nfe` says how many evaluations of the field it took."""
        x = self.decode(self._noise(n, generator))
        if self.dequantize:
            x = quantized(x)
        return x

    def sampling_cost(self) -> dict[str, Any]:
        """Return {'nfe': field evaluations of the last solve} (sample, decode, encode)."""
        return {"nfe": self.last_nfe}

    def motion(self, n: int, times: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return particles x_t (T, n, d) in the data's units: n draws of μ carried by the ODE,
        at each of the T increasing ``times`` in [0, 1] (t = 0 is μ pushed through the inverse
        standardisation)."""
        times = torch.as_tensor(times, dtype=torch.float32).flatten()
        ok = times.numel() > 0 and bool(((times >= 0) & (times <= 1)).all())
        if not ok or bool((times.diff() <= 0).any()):
            raise ConfigError(
                f"times = {times.tolist()} are not allowed; use increasing times in [0, 1]"
            )
        z = self._noise(n, generator)
        with full_precision(z.device), torch.no_grad():
            if times.numel() == 1 and float(times[0]) == 0.0:
                path = z[None]
            else:
                grid = times if float(times[0]) == 0.0 else torch.cat([times.new_zeros(1), times])
                path = self._solve(self.velocity, z, grid, "motion")
                path = path if float(times[0]) == 0.0 else path[1:]
        return torch.stack([self._from_field(p) for p in path])

    # --- the density ---------------------------------------------------------------------------

    @property
    def likelihood_kind(self) -> str:
        """:data:`~pushforward.contract.EXACT_LIKELIHOOD`, or :data:`HUTCHINSON_ESTIMATE` when
        the trace is estimated (``trace``, and d > :data:`EXACT_TRACE_MAX_DIM` under auto)."""
        return HUTCHINSON_ESTIMATE if self._hutchinson() else EXACT_LIKELIHOOD

    def _hutchinson(self) -> bool:
        return self.config.trace == "hutchinson" or (
            self.config.trace == "auto" and self.dim > EXACT_TRACE_MAX_DIM
        )

    def _log_density(self, y: Tensor, probe: Tensor | None, t: float = 1.0) -> Tensor:
        """Return log p_t(y) (n,) for rows y (n, d) in the data's units (dequantised pixels for
        images), in float64, with the exact trace or Hutchinson's for ``probe``."""
        u, ladj = self._to_field(y.to(self.data_loc.dtype))
        if t == 0.0:
            a0, u0 = torch.zeros_like(u[None, :, 0]), u[None]
        else:
            times = torch.tensor([t, 0.0])
            with full_precision(y.device):
                rhs = divergence_rhs(self.velocity, probe)
                u0, a0 = self._solve(rhs, (u, torch.zeros_like(u[:, 0])), times, "log_prob")
        # a(0) = −∫₀ᵗ tr ∂v/∂u ds, so log p_t(u) = log μ(u₀) + a(0)
        base = standard_normal_log_prob(u0[-1].double())
        return base + a0[-1].double() + ladj.double()

    def _rows(self, x: Tensor, probes: Callable[[Tensor], Tensor | None], t: float = 1.0) -> Tensor:
        out, nfe = [], 0
        for xb in x.split(EVAL_BATCH):
            out.append(self._log_density(xb, probes(xb), t))
            nfe += self.last_nfe
        self.last_nfe = nfe
        lp = torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)
        bad = ~torch.isfinite(lp)
        if bool(bad.any()):
            if not all(bool(torch.isfinite(p).all()) for p in self.parameters()):
                raise TrainingError("the flow-matching field's weights hold NaN or infinite values")
            row = int(bad.nonzero()[0])
            raise DataError(f"log p(x) is not finite at row {row} of x ({x[row].tolist()[:4]}…)")
        return lp

    def log_prob(self, x: Tensor) -> Tensor:
        """Return the exact log-density log p(x) in nats (n,) for x (n, d): the ODE backwards
        with the exact trace, d backward passes per evaluation (dequantised pixels for
        images)."""
        x = self._check_data(x)
        return self._rows(x, lambda xb: None).to(x.dtype)

    def marginal_log_prob(self, x: Tensor, t: float) -> Tensor:
        """Return log p_t(x) (n,) in nats for x (n, d): the exact density, in the data's units,
        of the particles at time t ∈ [0, 1] (p₀ is μ seen through the standardisation, p₁ the
        model's :meth:`log_prob`); the ODE from t back to 0 with the exact trace."""
        ok = isinstance(t, int | float) and not isinstance(t, bool) and 0 <= t <= 1
        if not ok:
            raise ConfigError(f"t = {t!r} is not allowed; use a time in [0, 1]")
        x = check_rows(x, "x", dim=self.dim)
        return self._rows(x, lambda xb: None, float(t)).to(x.dtype)

    def _probe(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else torch.device("cpu")
        signs = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * signs - 1).to(self.data_loc)

    def log_likelihood_rows(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> Tensor:
        """Return log p(x) (n,) in nats, float64, as :attr:`likelihood_kind` says: exact, or
        Hutchinson's unbiased estimate with a Rademacher probe per row from ``generator``
        (``iwae_k`` is not used)."""
        x = self._check_data(x)
        if not self._hutchinson():
            return self._rows(x, lambda xb: None)
        return self._rows(x, lambda xb: self._probe(xb.shape, generator))

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> dict[str, Any]:
        """Return the mean log-likelihood of the rows of x (n, d) with its standard error over
        rows (it includes the probes' noise when the trace is estimated), bits/dim, the kind of
        likelihood and the field evaluations the solves took.

        Keys: ``log_likelihood``, ``log_likelihood_stderr``, ``nll``, ``bits_per_dim``, ``rows``,
        ``exact``, ``likelihood``, ``likelihood_nfe``. Images are dequantised with
        ``generator``, and the log-likelihood is that of the 8-bit data, log p(y) − d log 256
        (as for the flows).
        """
        x = self._check_data(x)
        y = dequantized(x, generator=generator) if self.dequantize else x
        lp = self.log_likelihood_rows(y, generator=generator)
        if self.dequantize:
            lp = discrete_log_likelihood(lp, self.dim)
        return {
            **likelihood_summary(lp, dim=self.dim, exact=not self._hutchinson()),
            "likelihood": self.likelihood_kind,
            "likelihood_nfe": self.last_nfe,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Return the flow-matching loss on a batch x (B, d) (for DDP wrappers)."""
        return self.loss(x)["loss"]


SPEC = ModelSpec(
    FlowMatching,
    FlowMatchingConfig,
    "flow matching: g is an ODE's flow map, trained by regression; exact density by its trace",
    train_defaults=RECOMMENDED["train"],
    kind_train_defaults={"images": RECOMMENDED_IMAGES["train"]},
)
