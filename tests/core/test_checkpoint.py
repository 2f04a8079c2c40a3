"""Safetensors headers read without their data: a valid file round-trips its names, dtypes and
shapes (checked against safetensors' own reader), every kind of broken or foreign file gives one
CheckpointError naming it, a model's expected tensors are compared before anything is allocated,
and not one byte of tensor data is read."""

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from pushforward.core import (
    MAX_HEADER_BYTES,
    CheckpointError,
    ConfigError,
    check_tensor_header,
    read_safetensors_header,
    save_tensors,
)
from pushforward.core import io as checkpoint
from pushforward.train import checkpoint as train_checkpoint

TENSORS = {
    "w": torch.zeros(3, 4),
    "b": torch.zeros(4, dtype=torch.float64),
    "rng": torch.zeros(5, dtype=torch.uint8),
    "empty": torch.zeros(0, 2),
    "step": torch.tensor(7),
}


def raw_file(path, header: dict, data: bytes, *, length: int | None = None) -> None:
    """Write a safetensors file by hand: 8-byte little-endian length, JSON header, data."""
    text = json.dumps(header).encode()
    n = len(text) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + text + data)


def one_error(path, call=read_safetensors_header) -> str:
    """Return the message of the one CheckpointError ``call(path)`` raises; it names the file."""
    with pytest.raises(CheckpointError) as info:
        call(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


# --- read_safetensors_header ---------------------------------------------------------------------


def test_a_saved_file_round_trips_its_header(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, TENSORS, metadata={"pushforward": "{}"})
    header = read_safetensors_header(path)
    assert header == {
        "w": ("F32", (3, 4)),
        "b": ("F64", (4,)),
        "rng": ("U8", (5,)),
        "empty": ("F32", (0, 2)),
        "step": ("I64", ()),
    }
    with safe_open(str(path), framework="pt") as f:  # safetensors' own reading, as reference
        assert sorted(f.keys()) == sorted(header)
        for name in f.keys():
            assert tuple(f.get_slice(name).get_shape()) == header[name][1]
            assert f.get_slice(name).get_dtype() == header[name][0]


def test_a_file_of_no_tensors_has_an_empty_header(tmp_path):
    raw_file(tmp_path / "none.safetensors", {"__metadata__": {"a": "b"}}, b"")
    assert read_safetensors_header(tmp_path / "none.safetensors") == {}


def test_no_tensor_data_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.safetensors"
    save_tensors(path, {"w": torch.zeros(512, 512)})  # 1 MiB of data
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    reads: list[int] = []

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            assert n >= 0, "the header reader must never read to the end of the file"
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def fileno(self):
            return self.f.fileno()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(checkpoint, "open", lambda p, mode: Spy(open(p, mode)), raising=False)
    assert read_safetensors_header(path) == {"w": ("F32", (512, 512))}
    assert sum(reads) == 8 + header_length < path.stat().st_size - 1_000_000


def test_missing_and_unreadable_files(tmp_path):
    assert "not found" in one_error(tmp_path / "nope.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    assert "cannot read" in one_error(tmp_path / "dir.safetensors")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x10\x00"), "it is 2 bytes long, too short for the 8-byte"),
        (
            lambda p: raw_file(p, {}, b"", length=MAX_HEADER_BYTES + 1),
            "it declares a header of 100,000,001 bytes, more than the 100,000,000 allowed",
        ),
        (
            lambda p: raw_file(p, {}, b"", length=2**64 - 1),
            "it declares a header of 18,446,744,073,709,551,615 bytes, more than",
        ),
        (
            lambda p: raw_file(p, {"w": {}}, b"", length=1_000),
            "it declares a header of 1,000 bytes, but only 9 follow the header length (truncated?)",
        ),
        (
            lambda p: p.write_bytes((5).to_bytes(8, "little") + b'{"w":'),
            "its header is not JSON (Expecting value: line 1 column 6 (char 5))",
        ),
        (
            lambda p: p.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{}"),
            "its header is not JSON ('utf-8' codec can't decode byte 0xff",
        ),
        (lambda p: raw_file(p, [1, 2], b""), "its header is a JSON list, not an object"),
        (
            lambda p: raw_file(p, {"__metadata__": {"a": 1}}, b""),
            "its __metadata__ must map names to strings",
        ),
        (
            lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [2]}}, bytes(8)),
            "tensor 'w' must have a dtype, a shape and data_offsets",
        ),
        (
            lambda p: raw_file(
                p, {"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)
            ),
            "tensor 'w' has unknown dtype 'F33'; known: BOOL, U8",
        ),
        (
            lambda p: raw_file(
                p, {"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}, bytes(8)
            ),
            "tensor 'w' has shape [2, -1]; expected a list of integers >= 0",
        ),
        (
            lambda p: raw_file(
                p, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8)
            ),
            "tensor 'w' has data_offsets [8, 0]; expected [begin, end] with 0 <= begin <= end",
        ),
        (
            lambda p: raw_file(
                p, {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)
            ),
            "tensor 'w' of dtype F32 and shape (3,) needs 12 bytes, but its data_offsets "
            "[0, 8] hold 8",
        ),
        (
            lambda p: raw_file(
                p, {"w": {"dtype": "F64", "shape": [4], "data_offsets": [0, 32]}}, bytes(20)
            ),
            "tensor 'w' ends at byte 32 of the data, beyond the 20 bytes the file holds after its "
            "header (truncated?)",
        ),
        (
            lambda p: raw_file(
                p,
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                bytes(12),
            ),
            "tensor 'b' starts at byte 4 of the data and overlaps the tensor before it (which ends "
            "at byte 8)",
        ),
        (
            lambda p: raw_file(
                p, {"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)
            ),
            "tensor 'a' starts at byte 2 of the data and leaves a gap before it",
        ),
        (
            lambda p: raw_file(
                p, {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, bytes(5)
            ),
            "3 bytes follow the last tensor's data",
        ),
    ],
    ids=[
        "short",
        "huge-length",
        "max-u64-length",
        "header-beyond-file",
        "bad-json",
        "not-utf8",
        "not-object",
        "bad-metadata",
        "missing-key",
        "dtype",
        "shape",
        "offsets-order",
        "offsets-vs-shape",
        "data-truncated",
        "overlap",
        "gap",
        "trailing",
    ],
)
def test_broken_files_give_one_clear_error(tmp_path, make, message):
    path = tmp_path / "bad.safetensors"
    make(path)
    assert message in one_error(path)


def test_a_truncated_checkpoint_is_refused_from_its_header(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, TENSORS)
    path.write_bytes(path.read_bytes()[:-10])
    assert "beyond the" in one_error(path) and "(truncated?)" in one_error(path)


# --- check_tensor_header -------------------------------------------------------------------------


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_a_model_built_on_the_meta_device_checks_a_file_without_allocating(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    path = tmp_path / "model.safetensors"
    save_tensors(path, model.state_dict())
    with torch.device("meta"):
        shell = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert all(p.is_meta for p in shell.parameters())
    header = check_tensor_header(path, model_shapes(shell), max_bytes=(4 * 8 + 8 + 8 * 2 + 2) * 4)
    assert header == {k: ("F32", s) for k, s in model_shapes(model).items()}


def test_missing_unexpected_and_mis_shaped_tensors_are_named_together(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.zeros(2, 3), "b": torch.zeros(4), "extra": torch.zeros(1)})
    expected = {"a": (3, 2), "b": (4,), "c": (5,)}
    message = one_error(path, lambda p: check_tensor_header(p, expected, max_bytes=10**6))
    assert message == (
        f"'{path}' does not fit the model: missing 'c'; unexpected 'extra'; "
        "mis-shaped: 'a' has shape (2, 3), the model's (3, 2)"
    )


def test_long_lists_of_names_are_cut_short(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {})
    expected = {f"layer{i}": (1,) for i in range(8)}
    message = one_error(path, lambda p: check_tensor_header(p, expected, max_bytes=0))
    assert message.endswith("missing 'layer0', 'layer1', 'layer2', 'layer3', 'layer4' and 3 more")


def test_a_file_over_the_size_budget_is_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.zeros(10, 10), "g": torch.zeros(8, dtype=torch.uint8)})
    expected = {"w": (10, 10), "g": (8,)}
    assert check_tensor_header(path, expected, max_bytes=408)["w"] == ("F32", (10, 10))
    message = one_error(path, lambda p: check_tensor_header(p, expected, max_bytes=407))
    assert message == f"'{path}' holds 408 bytes of tensors, more than the 407 allowed"


@pytest.mark.parametrize("max_bytes", [-1, 1.5, None, True])
def test_the_size_budget_must_be_an_integer(tmp_path, max_bytes):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {})
    with pytest.raises(ConfigError, match=r"^max_bytes must be an integer >= 0"):
        check_tensor_header(path, {}, max_bytes=max_bytes)


def test_a_resumed_fused_adam_steps_channels_last_weights_as_an_uninterrupted_one(tmp_path):
    """Checkpoint files hold contiguous tensors; loaded as they are, the optimiser state of a
    channels-last weight has other strides, and fused Adam pairs it with the weight in memory
    order (silently wrong: 0.17 off here before the fix). Loading gives it the weight's layout."""
    from pushforward.models.gan import GAN, GANConfig
    from pushforward.train import TrainConfig, seeded

    def make():
        settings = {"net": "conv", "hidden": [8, 16], "critic_activation": "relu", "ema": 0.0}
        with seeded(0):
            return GAN(GANConfig(dim=64, latent=4, image_shape=(8, 8), gp_weight=0.0, **settings))

    x = torch.rand(32, 64, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(lr=1e-2)

    def steps(model, opts, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            model.training_step(x, opts, cfg, generator=g)

    straight = make()
    opts = straight.configure_optimizers(cfg)
    steps(straight, opts, 2, 1)
    path = tmp_path / "c.safetensors"
    train_checkpoint.save_checkpoint(path, straight, opts, torch.Generator(), {"epoch": 1})
    steps(straight, opts, 2, 2)
    resumed = make()
    ropts = resumed.configure_optimizers(cfg)
    train_checkpoint.load_checkpoint(path, resumed, ropts, torch.Generator())
    layouts = [
        (state["exp_avg"].stride(), p.stride(), p.contiguous().stride())
        for opt in ropts.values()
        for p, state in opt.state.items()
        if p.ndim == 4
    ]
    assert all(saved == own for saved, own, _ in layouts)
    assert any(own != plain for _, own, plain in layouts)  # some weight really is channels-last
    steps(resumed, ropts, 2, 2)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
