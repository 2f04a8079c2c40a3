"""The optimisers ``fit`` builds: torch's own steps and state, without importing the compiler."""

import copy
import pickle
import subprocess
import sys

import pytest
import torch

from pushforward.train import TrainConfig
from pushforward.train.optim import OPTIMIZERS, eager_optimizer

TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(net: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimiser_steps_exactly_as_torchs_own(name):
    cfg = TrainConfig(lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-3)
    ours, theirs = _net(0), _net(0)
    opt = OPTIMIZERS[name](ours.parameters(), cfg)
    assert isinstance(opt, TORCH[name]) and type(opt) is not TORCH[name]
    fused = opt.defaults.get("fused") or False
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if name == "sgd":
        kwargs["momentum"] = cfg.betas[0]
    else:
        kwargs.update(betas=cfg.betas, fused=fused or None)
    ref = TORCH[name](theirs.parameters(), **kwargs)
    _train(ours, opt, 7)
    _train(theirs, ref, 7)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)
    # the state moves between the two classes both ways, and training goes on alike (copies:
    # load_state_dict keeps the very tensors it is given)
    state = opt.state_dict()
    assert str(state) == str(ref.state_dict())
    ref.load_state_dict(copy.deepcopy(state))
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    _train(ours, opt, 3)
    _train(theirs, ref, 3)
    pairs = zip(ours.parameters(), theirs.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_step_updates_without_autograd_and_leaves_the_grad_mode_as_it_was(name):
    """torch's wrapper turns autograd off for the update (an in-place update of a leaf that
    requires grad is an error under it), and back on for the caller and the hooks."""
    net = _net(0)
    opt = OPTIMIZERS[name](net.parameters(), TrainConfig(lr=0.1))
    net(torch.randn(4, 5)).sum().backward()
    before = [p.detach().clone() for p in net.parameters()]
    seen = []
    opt.register_step_pre_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    with torch.enable_grad():
        opt.step()
        assert torch.is_grad_enabled()
    assert seen == [True]
    for p, b in zip(net.parameters(), before, strict=True):
        assert p.is_leaf and p.grad_fn is None and not torch.equal(p, b)


def test_an_optimiser_pickles_and_comes_back_as_the_same_class():
    net = _net(0)
    opt = OPTIMIZERS["adamw"](net.parameters(), TrainConfig())
    _train(net, opt, 2)
    back = pickle.loads(pickle.dumps(opt))
    assert type(back) is type(opt) and repr(back) == repr(opt)
    assert str(back.state_dict()) == str(opt.state_dict())


def test_an_unknown_wrapper_leaves_the_class_as_torch_made_it():
    class Plain(torch.optim.SGD):
        def step(self, closure=None):  # not torch's wrapper: nothing to unwrap
            return super().step(closure)

    assert eager_optimizer(Plain) is Plain
    assert eager_optimizer(torch.optim.SGD) is not torch.optim.SGD


_NO_COMPILER = """
import sys
from pushforward.cli import main
out = sys.argv[1]
for model in ("vae", "gan", "flow", "fm"):
    run = f"{out}/{model}"
    assert main(["fit", model, "--data", "ring8", "-n", "300", "--epochs", "1", "--out", run,
                 "--no-figures", "--device", "cpu"]) == 0  # a GPU's default step is compiled
    assert main(["sample", run, "-n", "50", "--out", f"{run}/s.csv", "--device", "cpu"]) == 0
print("compiler loaded:", "torch._dynamo" in sys.modules)
"""


def test_fitting_and_sampling_every_model_leaves_the_compiler_unloaded(tmp_path):
    """Importing ``torch._dynamo`` took 2.4–3.3 s of every command on a 2-core AMD EPYC with AVX2;
    torch's optimisers, ``torch.func`` and meta-device builds import it at first use. A fresh
    interpreter fits and samples each model kind through the CLI without loading it."""
    done = subprocess.run([sys.executable, "-c", _NO_COMPILER, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "compiler loaded: False", done.stdout[-2000:]
