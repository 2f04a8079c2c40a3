"""The loop takes each step as the model declares (its ``optimization``): autograd on its loss,
its hand-written gradients, or its own step; DDP's loss reaches the step as an argument."""

import pytest
import torch
from torch import nn

from pushforward.core import ConfigError
from pushforward.train import Optimization, Trainable, TrainConfig, fit
from pushforward.train.forward import loss_forward

CFG = TrainConfig(epochs=2, batch_size=8, lr=0.1, seed=0)  # 4 steps an epoch on 32 rows
STEPS = 8


def data():
    return torch.rand(32, 3, generator=torch.Generator().manual_seed(0))


class Quadratic(Trainable):
    """loss(w) = mean over the batch of ‖x − w‖², whose gradient is −2 · mean(x − w); counts
    how each step reached it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.calls = {"loss": 0, "manual": 0, "own": 0}

    def get_config(self):
        return {}

    def loss(self, x, *, generator=None, epoch=None):
        self.calls["loss"] += 1
        return {"loss": (x - self.w).pow(2).sum(1).mean()}

    def manual_gradients(self, x, *, generator=None, epoch=None):
        self.calls["manual"] += 1
        with torch.no_grad():
            terms = {"loss": (x - self.w).pow(2).sum(1).mean()}
            return terms, [(self.w, -2 * (x - self.w).mean(0))]


class ByAutograd(Quadratic):
    optimization = Optimization.AUTOGRAD


class ByHand(Quadratic):
    optimization = Optimization.MANUAL_GRADIENTS


class Declining(ByHand):
    """Declares hand-written gradients but gives none (as the VAE does for a conv net)."""

    def manual_gradients(self, x, *, generator=None, epoch=None):
        self.calls["manual"] += 1
        return None


class OwnStep(Quadratic):
    """Its own step: plain gradient descent by hand, without an optimiser's update."""

    optimization = Optimization.OWN_STEP

    def training_step(self, x, optimizers, cfg, *, generator=None, epoch=0.0):
        self.calls["own"] += 1
        terms, [(w, grad)] = self.manual_gradients(x)
        with torch.no_grad():
            w -= cfg.lr * grad
        return terms


class Undeclared(Quadratic):
    optimization = Optimization.OWN_STEP  # but no training_step of its own


def test_an_autograd_model_steps_on_its_loss_and_is_never_asked_for_gradients():
    model = ByAutograd()
    fit(model, data(), CFG)
    assert model.calls == {"loss": STEPS, "manual": 0, "own": 0}


def test_a_model_with_hand_written_gradients_steps_on_them_to_autograds_weights():
    by_hand, by_autograd = ByHand(), ByAutograd()
    fit(by_hand, data(), CFG)
    fit(by_autograd, data(), CFG)
    assert by_hand.calls == {"loss": 0, "manual": STEPS, "own": 0}
    torch.testing.assert_close(by_hand.w, by_autograd.w)
    assert not torch.equal(by_hand.w, torch.zeros(3))


def test_where_the_hand_written_gradients_decline_autograd_takes_the_step():
    model = Declining()
    fit(model, data(), CFG)
    assert model.calls == {"loss": STEPS, "manual": STEPS, "own": 0}
    reference = ByAutograd()
    fit(reference, data(), CFG)
    assert torch.equal(model.w, reference.w)


def test_a_model_with_its_own_step_takes_it():
    model = OwnStep()
    fit(model, data(), CFG)
    assert model.calls == {"loss": 0, "manual": STEPS, "own": STEPS}
    assert not torch.equal(model.w, torch.zeros(3))


def test_a_model_declaring_its_own_step_without_one_is_told_so():
    with pytest.raises(NotImplementedError, match="Undeclared declares its own training step"):
        fit(Undeclared(), data(), CFG)


@pytest.mark.parametrize("cls", [ByAutograd, ByHand])
def test_the_loss_forward_passed_in_is_the_one_the_step_differentiates(cls):
    """Under torchrun fit passes DDP's loss as ``loss_forward``: the step takes it (not the
    model's own loss, nor its hand-written gradients, which DDP would not average)."""
    model, seen = cls(), []

    def forward(x, *, generator=None, epoch=None):
        seen.append(x.shape[0])
        return {"loss": 3 * (x - model.w).pow(2).sum(1).mean()}

    sgd = TrainConfig(optimizer="sgd", lr=0.1)  # a first step of lr · the gradient
    opts = model.configure_optimizers(sgd)
    x = data()[:8]
    model.training_step(x, opts, sgd, loss_forward=forward)
    assert seen == [8] and model.calls == {"loss": 0, "manual": 0, "own": 0}
    torch.testing.assert_close(model.w.detach(), -0.1 * -6 * x.mean(0))  # 3 × the loss's


def test_several_processes_are_set_up_as_the_model_declares():
    """A model with its own step trains in several processes only if it keeps them in lock-step
    itself (the GAN); otherwise it is refused before the first step."""
    with pytest.raises(ConfigError, match="OwnStep takes its own training steps and cannot yet"):
        loss_forward(OwnStep(), TrainConfig(), torch.device("cpu"), several=True)

    class Syncing(OwnStep):
        syncs_gradients = True

    assert loss_forward(Syncing(), TrainConfig(), torch.device("cpu"), several=True) is None
    # nor is a model's own step compiled: it calls its loss itself
    compiled = TrainConfig(compile="default")
    assert loss_forward(Syncing(), compiled, torch.device("cpu"), several=False) is None


@pytest.mark.parametrize(("rows", "world"), [(7, 3), (64, 2), (5, 5), (2, 4)])
def test_each_shard_starts_where_the_ranks_before_it_end(rows, world):
    from pushforward.train.distributed import gather_rows
    from pushforward.train.trainable import Shard

    batch = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2)
    total = torch.zeros_like(batch)
    for rank in range(world):
        shard = Shard(rank=rank, world=world, rows=rows)
        own = shard.take(batch)
        assert own.shape[0] == shard.size and shard.weight == shard.size * world / rows
        assert torch.equal(batch[shard.start : shard.start + shard.size], own)
        # one process: this shard's rows in place among zeros (processes add them up exactly)
        total += gather_rows(own, rows, shard.start)
    assert torch.equal(total, batch)
