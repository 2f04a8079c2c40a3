"""The training layer's device policy: which device a run names, where data go, which levers
apply. CUDA is simulated (torch.cuda.is_available and device_count patched), so that every
branch runs on any host."""

import pytest
import torch
from torch import nn

from pushforward.core import ConfigError
from pushforward.train import (
    DEVICES,
    TrainConfig,
    can_fork,
    model_device,
    resolve_device,
    to_model_device,
)
from pushforward.train.device import (
    available_memory,
    check_memory,
    ddp_device_ids,
    generator_fits,
    leave_cores,
    to_device,
)


def gpus(monkeypatch, count: int) -> None:
    """Make this torch see ``count`` CUDA devices (none: no CUDA at all)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("count", [0, 2])
def test_auto_is_cuda_where_torch_sees_a_gpu_and_the_cpu_elsewhere(monkeypatch, count):
    gpus(monkeypatch, count)
    assert resolve_device("auto") == torch.device("cuda" if count else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_and_cuda_n_name_the_devices_torch_sees(monkeypatch):
    gpus(monkeypatch, 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(
        ConfigError,
        match=r"device 'cuda:2' was asked for, but this torch sees 2 CUDA devices: cuda:0, cuda:1$",
    ):
        resolve_device("cuda:2")
    gpus(monkeypatch, 1)
    with pytest.raises(ConfigError, match=r"'cuda:7' .* sees 1 CUDA device: cuda:0$"):
        resolve_device("cuda:7")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused(monkeypatch, name):
    gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match=f"device '{name}' was asked for, but this torch sees no"):
        resolve_device(name)
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        TrainConfig(device=name)


@pytest.mark.parametrize("name", ["tpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", "cuda1", ""])
def test_unknown_device_names_list_the_known_ones(monkeypatch, name):
    gpus(monkeypatch, 2)
    known = "known: auto, cpu, cuda, cuda:N"
    with pytest.raises(ConfigError, match=f"unknown device '{name}'; {known}"):
        resolve_device(name)
    assert list(DEVICES) == ["auto", "cpu", "cuda", "cuda:N"]


def test_under_torchrun_cuda_is_the_processs_own_device(monkeypatch):
    gpus(monkeypatch, 2)
    for name in ("auto", "cuda", "cuda:0"):
        assert resolve_device(name, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"local rank 2 trains on cuda:2, but this torch sees 2"):
        resolve_device("cuda", local_rank=2)
    gpus(monkeypatch, 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cpu")


def test_the_config_checks_its_device_and_asks_for_auto_by_default(monkeypatch):
    gpus(monkeypatch, 2)
    assert TrainConfig().device == "auto"
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match="cuda:5"):
        TrainConfig(device="cuda:5")


def test_ddp_takes_the_one_cuda_device_and_none_on_the_cpu():
    assert ddp_device_ids(torch.device("cuda", 3)) == [3]
    assert ddp_device_ids(torch.device("cpu")) is None


def test_data_go_where_the_model_is():
    model = nn.Linear(3, 2)
    x = torch.rand(4, 3)
    assert model_device(model) == torch.device("cpu")
    assert to_model_device(x, model) is x  # already there: no copy
    with torch.device("meta"):
        meta = nn.Linear(3, 2)
    assert to_model_device(x, meta).device.type == "meta"
    buffers_only = nn.BatchNorm1d(3, affine=False).to("meta")
    assert model_device(buffers_only).type == "meta"
    assert model_device(nn.Identity()) == torch.device("cpu")  # no weights: the CPU


def test_fork_only_serves_cpu_training():
    assert not can_fork(torch.device("cuda"))
    assert not can_fork(torch.device("meta"))


def test_leave_cores_takes_threads_away_and_gives_them_back():
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with leave_cores(1):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 3
        torch.set_num_threads(1)
        with leave_cores(1):
            assert torch.get_num_threads() == 1  # never fewer than one
        with pytest.raises(RuntimeError), leave_cores(1):
            raise RuntimeError
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


class _ClosedForm:
    """A model fitted in closed form: plain tensor attributes, no nn.Module."""

    def __init__(self) -> None:
        self.mean_ = torch.zeros(3, dtype=torch.float64)
        self.components_ = torch.ones(2, 3, dtype=torch.float64)
        self.n_samples_ = 5


def test_a_closed_form_model_moves_with_its_fitted_tensors():
    model = _ClosedForm()
    assert model_device(model) == torch.device("cpu")
    to_device(model, "meta")
    assert model_device(model) == torch.device("meta")
    assert model.mean_.device.type == model.components_.device.type == "meta"
    assert model.n_samples_ == 5  # not a tensor: left alone
    assert to_model_device(torch.rand(2, 3), model).device.type == "meta"


def test_a_module_moves_with_its_weights():
    model = to_device(nn.Linear(3, 2), "meta")
    assert model_device(model) == torch.device("meta")


def test_a_generator_state_of_another_kind_of_device_does_not_fit():
    cpu = torch.Generator().manual_seed(0)
    assert generator_fits(cpu, torch.Generator().manual_seed(1).get_state())
    philox = torch.zeros(16, dtype=torch.uint8)  # CUDA's: a seed and an offset
    assert not generator_fits(cpu, philox)


def test_available_memory_reads_memavailable_on_the_cpu():
    free = available_memory(torch.device("cpu"))
    assert free is None or free > 0
    assert available_memory(torch.device("meta")) is None


def test_a_model_larger_than_the_memory_there_is_refused(monkeypatch):
    import pushforward.train.device as device

    monkeypatch.setattr(device, "available_memory", lambda d: 2**30)
    check_memory(2**29, torch.device("cpu"), what="a vae")
    with pytest.raises(ConfigError, match=r"a vae needs 16\.0 GiB but cpu has 1\.0 GiB available"):
        check_memory(16 * 2**30, torch.device("cpu"), what="a vae")
    monkeypatch.setattr(device, "available_memory", lambda d: None)
    check_memory(2**60, torch.device("cpu"), what="a vae")  # unknown: no check


def test_processes_of_one_host_share_its_cpu_memory_but_not_their_gpus(monkeypatch):
    """Under torchrun every process holds the whole model: on the CPU they share one memory."""
    import pushforward.train.device as device

    monkeypatch.setattr(device, "available_memory", lambda d: 2**30)
    check_memory(2**29, torch.device("cpu"), what="a vae", processes=2)
    with pytest.raises(ConfigError, match=r"needs 512\.0 MiB in each of 4 processes but cpu has"):
        check_memory(2**29, torch.device("cpu"), what="a vae", processes=4)
    check_memory(2**29, torch.device("cuda", 1), what="a vae", processes=4)  # one GPU each


def test_autocast_is_seen_where_it_is_on_and_switched_off_where_a_device_has_it():
    from pushforward.train import autocast_enabled, full_precision

    assert not autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_enabled(torch.device("cpu"))
        with full_precision("cpu"):
            assert not autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        with full_precision("meta"):  # meta has no autocast: nothing to switch off
            assert autocast_enabled("cpu")


def test_cudnn_searches_its_fastest_convolutions_on_cuda_only(monkeypatch):
    from pushforward.train import accelerator_levers

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    accelerator_levers(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    accelerator_levers(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
