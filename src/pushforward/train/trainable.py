"""What :func:`~pushforward.train.fit` trains: :class:`Trainable`, a model of the contract that
says how it takes a step (its declared :class:`Optimization`), with the pieces a step needs
under torchrun (:class:`Shard`, :func:`draw_rows`) and the check every step makes
(:func:`check_finite`)."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from pushforward.core import Model, TrainingError
from pushforward.train import distributed
from pushforward.train.capture import deferred_checks
from pushforward.train.checkpoint import load_state_checked
from pushforward.train.optim import OPTIMIZERS

if TYPE_CHECKING:
    from pushforward.train.config import TrainConfig

__all__ = [
    "Optimization",
    "Shard",
    "Trainable",
    "check_finite",
    "draw_rows",
    "grad_norm",
    "seeded",
]

Terms = dict[str, Tensor]
"""Named scalar terms of a step; 'loss' is the one minimised."""


class Optimization(enum.Enum):
    """How a :class:`Trainable` takes an optimisation step: its :attr:`~Trainable.optimization`.

    :func:`~pushforward.train.fit` reads it to set up several processes: the autograd patterns
    train through DistributedDataParallel (the wrapped loss is passed to the step as
    ``loss_forward``), a model's own step keeps the processes in lock-step itself
    (:attr:`Trainable.syncs_gradients`).
    """

    AUTOGRAD = "autograd"
    """:meth:`Trainable.loss`, its gradients by autograd, one optimiser (the default step)."""
    MANUAL_GRADIENTS = "manual gradients"
    """The default step on the gradients :meth:`Trainable.manual_gradients` writes out by hand
    (the VAE's), in one process; autograd's where it gives None, and under torchrun."""
    OWN_STEP = "own step"
    """The model's own :meth:`Trainable.training_step` (the GAN's alternating players)."""


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (typically a model's construction) with the global RNG seeded, then restore it.

    Layer initialisers draw from the global generator; this makes them reproducible without
    leaving the caller's global RNG state changed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def grad_norm(module: nn.Module, clip: float) -> Tensor:
    """Return the global 2-norm of a module's gradients (0 for none), clipping them to ``clip``
    if > 0 (a model that takes its own steps: the GAN's two players)."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip > 0:
        return nn.utils.clip_grad_norm_(params, clip)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))


@dataclass(frozen=True)
class Shard:
    """This process's share of a batch under torchrun: rows ``tensor_split(world)[rank]`` of the
    batch's ``rows`` rows (every process holds the batch's row indices)."""

    rank: int
    world: int
    rows: int

    @property
    def size(self) -> int:
        """b_r, this process's rows: tensor_split gives the first ``rows % world`` processes one
        row more than the others."""
        base, extra = divmod(self.rows, self.world)
        return base + (1 if self.rank < extra else 0)

    @property
    def weight(self) -> float:
        """b_r·world/B for this process's b_r of the batch's B rows: a loss that is a mean over
        the process's rows, times this weight, averages over the processes to the whole batch's
        mean (shards may differ in size by one row)."""
        return self.size * self.world / self.rows

    @property
    def start(self) -> int:
        """The index of this process's first row in the whole batch (the processes hold the
        batch's rows in rank order)."""
        base, extra = divmod(self.rows, self.world)
        return self.rank * base + min(self.rank, extra)

    def take(self, t: Tensor) -> Tensor:
        """Return this process's rows of t (B, …), a tensor of the whole batch."""
        if t.shape[0] != self.rows:
            raise ValueError(f"a batch-wide tensor has {self.rows} rows, got {t.shape[0]}")
        return t.tensor_split(self.world)[self.rank]


def draw_rows(
    draw: Callable[[int], Tensor], n: int, shard: Shard | None = None
) -> Tensor:  # fmt: skip
    """Return ``draw(n)``, the random rows (n, …) one process's share of a batch needs: with a
    ``shard``, the whole batch's draws (``shard.rows``) from the generator every process shares,
    this process's n of them taken, so that the processes together draw what one process would."""
    if shard is None:
        return draw(n)
    rows = shard.take(draw(shard.rows))
    assert rows.shape[0] == n, (rows.shape, n)
    return rows


def check_finite(terms: Mapping[str, Tensor]) -> None:
    """Raise a bare TrainingError naming the first non-finite term; :func:`fit` adds when.

    Under torchrun every process learns whether any process failed, so all stop together.
    Inside :func:`~pushforward.train.capture.deferring` it only records the terms on the device
    (no host synchronisation); :func:`fit` then reads them once an epoch.
    """
    deferred = deferred_checks()
    if deferred is not None:
        deferred.record(terms)
        return
    values = torch.stack([v.detach().reshape(()) for v in terms.values()])
    ok = bool(torch.isfinite(values).all())  # one host synchronisation in the common case
    if distributed.any_true(not ok, values.device):
        if ok:
            raise TrainingError("a loss term became non-finite in another process")
    else:
        return
    bad = [k for k, v in terms.items() if not bool(torch.isfinite(v).all())]
    if bad:
        name = next((k for k in bad if k != "loss"), bad[0])
        value = float(terms[name].detach().reshape(-1)[0])
        raise TrainingError(f"the {name} term became {value}")


class Trainable(nn.Module, Model):
    """A model of the contract (:class:`~pushforward.core.Model`) trained by :func:`fit`.

    A subclass declares how it takes a step in :attr:`optimization`: by default it defines
    :meth:`loss` and the default :meth:`training_step` minimises it with one optimiser through
    autograd; :attr:`Optimization.MANUAL_GRADIENTS` also defines :meth:`manual_gradients`;
    :attr:`Optimization.OWN_STEP` overrides :meth:`training_step` (several optimisers, as the
    GAN). It defines :meth:`get_config` so that it rebuilds from its config; the state is the
    module's ``state_dict``.

    Under torchrun the autograd patterns train through DistributedDataParallel; a model with its
    own step declares ``syncs_gradients``: :func:`fit` then passes its ``training_step`` a
    :class:`Shard` and the generator every process shares, and the step averages its gradients
    itself (:func:`pushforward.train.average_gradients_`) and draws the whole batch's noise
    (:func:`draw_rows`).
    """

    trained = True
    optimization: ClassVar[Optimization] = Optimization.AUTOGRAD
    """How :meth:`training_step` takes a step (see :class:`Optimization`)."""
    syncs_gradients: ClassVar[bool] = False
    """Whether a model's own :meth:`training_step` keeps several processes in lock-step itself
    (see above); it may train under torchrun only then."""
    stacks: ClassVar[bool] = False
    """Whether several seeds of this model may train as one stacked model
    (:func:`~pushforward.train.fit_seeds`): its :meth:`loss` takes its draws as ``noise``
    (:meth:`draw_noise`) or ``prepared``, and has no control flow that depends on the data's
    values (which ``torch.vmap`` cannot trace)."""
    stack_free_settings: ClassVar[tuple[str, ...]] = ()
    """Settings that may differ between the members of a stack (values a model derives from
    its data that only start a weight or buffer, which the stack carries per member); every
    other setting must be equal, since the stacked loss reads them from the first member."""
    compiles: ClassVar[bool] = True
    """Whether :meth:`loss` may be compiled (``TrainConfig.compile``): False where the compiler
    is known to get it wrong; the model then trains op by op."""
    builds_on_meta: ClassVar[bool] = True
    """Whether the model can be built on ``torch.device("meta")`` (:meth:`state_shapes`): False
    where an operator it needs has no meta kernel, so that the attempt is not made (it fails
    only after torch has imported ``torch._dynamo`` for its Python decompositions, 2–3 s)."""

    def get_state(self) -> dict[str, Tensor]:
        """Return the weights and buffers (the ``state_dict``)."""
        return self.state_dict()

    def load_state(self, state: Mapping[str, Tensor], *, source: str = "state") -> None:
        """Load weights, refusing missing, extra or mis-shaped tensors by name."""
        load_state_checked(self, state, source)

    @classmethod
    def state_shapes(
        cls, config: Mapping[str, Any], data_shape: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        """Return the shape of every weight and buffer, built on the meta device (no memory)."""
        model = None
        if cls.builds_on_meta:
            try:
                with torch.device("meta"):
                    model = cls.from_config(config)
            except NotImplementedError:
                pass
        if model is None:
            # an operator without a meta kernel (zuko's masks use torch.unique): such a model
            # bounds its own size in its constructor, so it is built for real
            model = cls.from_config(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def loss(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        epoch: float | None = None,
    ) -> Terms:
        """Return {'loss': scalar to minimise, other named scalar terms} for a batch x (B, d).

        ``epoch`` is the training time elapsed in epochs (0.5 = half way through the first), for
        schedules; None means training is over (evaluation).
        """
        raise NotImplementedError(f"{type(self).__name__} must define loss or training_step")

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Return the named optimisers; by default one over all parameters."""
        return {"model": OPTIMIZERS[cfg.optimizer](self.parameters(), cfg)}

    def training_step(
        self,
        x: Tensor,
        optimizers: Mapping[str, torch.optim.Optimizer],
        cfg: TrainConfig,
        *,
        generator: torch.Generator | None = None,
        epoch: float = 0.0,
        shard: Shard | None = None,
        prepared: Any = None,
        loss_forward: Callable[..., Terms] | None = None,
    ) -> Terms:
        """Take one optimisation step on the batch x (B, d); return the detached terms.

        Under torchrun x is this process's ``shard`` of the batch and ``loss_forward`` computes
        :meth:`loss` through DistributedDataParallel (both passed only then, the latter to the
        autograd patterns only); ``prepared`` is :meth:`prepare_batch`'s result (passed only by
        models that prepare). A model's own step checks its terms with :func:`check_finite`
        before it updates the weights, as this one does: :func:`fit` checks each step's terms
        only through it (and the epoch's sums at the epoch's end)."""
        if self.optimization is Optimization.OWN_STEP:
            raise NotImplementedError(
                f"{type(self).__name__} declares its own training step (optimization = "
                "OWN_STEP) and must define training_step"
            )
        (opt,) = optimizers.values()
        terms = None
        if (
            self.optimization is Optimization.MANUAL_GRADIENTS
            and loss_forward is None  # under torchrun DDP averages autograd's gradients
            and shard is None
            and prepared is None
        ):
            terms = self._manual_step(x, opt, generator=generator, epoch=epoch)
        if terms is None:
            forward = loss_forward if loss_forward is not None else self.loss
            extra = {"prepared": prepared} if prepared is not None else {}
            terms = forward(x, generator=generator, epoch=epoch, **extra)
            check_finite(terms)
            opt.zero_grad(set_to_none=True)
            # DDP averages the processes' gradients; a shard's weight b_r·world/B makes that
            # average the gradient of the whole batch's mean loss even when shards differ in size
            (terms["loss"] * (shard.weight if shard is not None else 1.0)).backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
        opt.step()
        return {k: v.detach() for k, v in terms.items()}

    def _manual_step(
        self, x: Tensor, opt: torch.optim.Optimizer, *, generator: torch.Generator | None,
        epoch: float,
    ) -> Terms | None:  # fmt: skip
        """Set the gradients :meth:`manual_gradients` gives for x (B, d) and return its terms,
        or None where it declines (autograd then takes the step)."""
        manual = self.manual_gradients(x, generator=generator, epoch=epoch)
        if manual is None:
            return None
        terms, pairs = manual
        check_finite(terms)
        opt.zero_grad(set_to_none=True)
        for p, g in pairs:
            p.grad = g
        return terms

    def manual_gradients(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> tuple[Terms, list[tuple[Tensor, Tensor]]] | None:
        """Return (the detached terms of :meth:`loss`, (parameter, gradient of the loss) pairs)
        for the batch x (B, d), computed without autograd, or None (the default) to let
        autograd compute them. The default :meth:`training_step` asks a model that declares
        :attr:`Optimization.MANUAL_GRADIENTS`, in one process (under torchrun autograd's
        gradients are the ones DDP averages); parameters without a pair get no gradient. The
        result must equal autograd's to rounding, with the same random draws."""
        return None

    def draw_noise(self, x: Tensor, *, generator: torch.Generator | None = None) -> Any:
        """Return the random draws :meth:`loss` makes on the batch x (B, d) from ``generator``,
        as it makes them (a tensor or a tuple of them; None: it draws nothing); a model that
        :attr:`stacks` computes the same terms from ``loss(x, noise=that)`` without drawing."""
        return None

    def prepare(self, x: Tensor) -> None:
        """Set up from the training data x (n, d) before the first step of a fresh run (not on
        resume: what this sets belongs in buffers, which checkpoints carry); nothing by default."""

    def finish(self, x: Tensor) -> None:
        """Set up from the training data x (n, d) after the last epoch (e.g. the VAE's prior
        fitted to its codes), in every process; what this sets belongs in buffers. Called when
        training completes (not when it is interrupted), also when a finished run is resumed, so
        it must give the same result from the same weights and data; nothing by default."""

    @property
    def prepares_batches(self) -> bool:
        """Whether :meth:`prepare_batch` does work for each batch (then :func:`fit` runs it)."""
        return False

    def prepare_batch(self, x: Tensor, *, generator: torch.Generator) -> Any:
        """Return the part of a step on the batch x (B, d) that does not depend on the weights
        (e.g. flow matching's optimal-transport pairing), for :meth:`loss`'s ``prepared``.

        When :attr:`prepares_batches`, :func:`fit` calls it for the next batches while the
        current step trains, in a process forked at the start of training or on a worker thread
        (:mod:`pushforward.train.prefetch`), with a CPU ``generator`` seeded from the run's
        seed, the epoch, the step and the process's rank: the result is the same however the
        call is scheduled, and a resumed run draws the same. It must not touch the weights, nor
        read anything that changes during training (a forked process sees the model as it was
        at the start).
        """
        return None

    def diagnostics(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """Return extra per-epoch metrics on the training data x (n, d); none by default."""
        return {}
