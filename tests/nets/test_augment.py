"""Differentiable augmentation (DiffAugment) of the critic's images: translation and cutout
against independent references, their gradients, and the GAN's use of them."""

import copy

import numpy as np
import pytest
import torch

from pushforward.core import ConfigError
from pushforward.models.gan import GAN, GANConfig
from pushforward.nets import AUGMENTS, augment, cutout, translation
from pushforward.train import TrainConfig, seeded


def images(n: int = 6, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, side * side, generator=torch.Generator().manual_seed(seed)) + 0.5


def shifted_by_hand(img: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """img (s, s) moved dr rows down and dc columns right, zeros moved in."""
    s = img.shape[0]
    out = np.zeros_like(img)
    for r in range(s):
        for c in range(s):
            if 0 <= r - dr < s and 0 <= c - dc < s:
                out[r, c] = img[r - dr, c - dc]
    return out


def test_translation_moves_each_image_by_its_own_shift_and_fills_zeros():
    x = images(side=8)  # m = ⌊8/8 + ½⌋ = 1: shifts in −1..1
    u = torch.tensor([[0.0, 0.0], [0.99, 0.99], [0.5, 0.0], [0.34, 0.66], [0.1, 0.9], [0.7, 0.2]])
    got = translation(x, u).reshape(-1, 8, 8).numpy()
    shifts = (u * 3).long() - 1
    for i in range(len(x)):
        dr, dc = shifts[i].tolist()
        want = shifted_by_hand(x[i].reshape(8, 8).numpy(), dr, dc)
        np.testing.assert_array_equal(got[i], want)
    # a middle draw is no shift at all; every shift is within ⌊s/8 + ½⌋ pixels
    assert torch.equal(translation(x, torch.full((6, 2), 0.5)), x)
    side = 28
    wide = translation(images(4, side), torch.tensor([[0.0, 0.0]] * 4)).reshape(4, side, side)
    # u = 0 is the largest shift up and left, m = 4 pixels on digits
    assert (wide[:, -4:] == 0).all() and (wide[:, :, -4:] == 0).all()
    assert (wide[:, :-4, :-4] > 0).all()


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_edges():
    x = images(3, side=8)
    u = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.99, 0.3]])
    got = cutout(x, u).reshape(3, 8, 8)
    c = 4
    for i in range(3):
        centre = (u[i] * (8 + 1)).long()  # c even: s + 1 centres
        lo = (centre - c // 2).tolist()
        want = x[i].reshape(8, 8).clone()
        want[max(lo[0], 0) : max(lo[0] + c, 0), max(lo[1], 0) : max(lo[1] + c, 0)] = 0
        assert torch.equal(got[i], want)
    assert int((got[0] == 0).sum()) == c * c  # inside the image: exactly c² pixels
    assert int((got[1] == 0).sum()) == (c // 2) ** 2  # at the corner: a quarter of it


def test_augmentations_are_differentiable_in_the_image():
    x = images(4, side=8).requires_grad_(True)
    draws = iter(torch.rand(8, 4, 2, generator=torch.Generator().manual_seed(1)))
    y = augment("translation,cutout", x, lambda p: next(draws))
    (grad,) = torch.autograd.grad(y.sum(), x)
    # each output pixel is one input pixel or 0: the gradient counts the pixels kept, 0 or 1
    assert set(grad.unique().tolist()) <= {0.0, 1.0}
    assert float(grad.sum()) == float((y != 0).sum())


def test_every_policy_runs_and_none_is_the_identity():
    x = images(5, side=12)
    for name in AUGMENTS:
        y = augment(name, x, lambda p: torch.rand(p, 2, generator=torch.Generator().manual_seed(2)))
        assert y.shape == x.shape
    assert augment("none", x, lambda p: 1 / 0) is x


def make_image_gan(augment: str, seed: int = 0) -> GAN:
    with seeded(seed):
        return GAN(GANConfig(dim=64, latent=4, net="conv", hidden=[4, 8], image_shape=(8, 8),
                             critic_activation="relu", penalty="r1", gp_weight=1.0,
                             penalty_every=1, ema=0.0, augment=augment))  # fmt: skip


def test_the_critic_judges_real_and_generated_images_through_the_same_transformation():
    gan = make_image_gan("translation")
    start = copy.deepcopy(gan.generator_net)  # g's weights before the step
    seen = []
    hook = gan.critic.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    x = images(16, side=8).clamp(0, 1)
    gen = torch.Generator().manual_seed(3)
    cfg = TrainConfig(lr=1e-3)
    gan.training_step(x, gan.configure_optimizers(cfg), cfg, generator=gen)
    hook.remove()
    # replayed from the same seed: the real rows' shifts, then the critic step's fakes and their
    # shifts, R1 at the same translated real rows, then the generator step's fakes and shifts
    replay = torch.Generator().manual_seed(3)
    with torch.no_grad():
        real = translation(x, torch.rand(16, 2, generator=replay))
        fakes = []
        for _ in range(2):
            y = start(gan.base.sample(16, generator=replay))
            fakes.append(translation(y, torch.rand(16, 2, generator=replay)))
    assert len(seen) == 4
    assert torch.equal(seen[0], real) and torch.equal(seen[2], real)
    torch.testing.assert_close(seen[1], fakes[0])
    torch.testing.assert_close(seen[3], fakes[1])
    # unaugmented, the same step shows the critic the data itself
    plain, seen = make_image_gan("none"), []
    hook = plain.critic.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    plain.training_step(x, plain.configure_optimizers(cfg), cfg, generator=torch.Generator())
    hook.remove()
    assert torch.equal(seen[0], x)


def test_augmentation_is_refused_where_there_are_no_square_images():
    with pytest.raises(ConfigError, match=r"augment = 'translation'.*square image"):
        GAN(GANConfig(dim=2, latent=2, augment="translation"))
    with pytest.raises(ConfigError, match="augmentation"):
        GAN(GANConfig(dim=64, latent=2, image_shape=(8, 8), augment="rotation"))
    with pytest.raises(ConfigError, match=r"augment = 'cutout'.*pack = 2"):
        GANConfig(dim=64, image_shape=(8, 8), net="mlp", pack=2, augment="cutout")
    assert GAN(GANConfig(dim=2, latent=2)).get_config()["augment"] == "none"


def test_the_setting_defaults_by_kind_is_recorded_and_old_runs_keep_plain_images(tmp_path):
    from pushforward.cli import main
    from pushforward.models.gan import RECOMMENDED_IMAGES, GANConfig
    from pushforward.runs import RunConfig, load_model

    assert GANConfig().resolve("points").augment == "none"
    assert GANConfig().resolve("images").augment == RECOMMENDED_IMAGES["model"]["augment"]
    assert GANConfig(augment="cutout").resolve("images").augment == "cutout"
    run = tmp_path / "run"
    argv = ["fit", "gan", "--data", "digits", "--rows", ":64", "--epochs", "1", "--hidden", "4,8"]
    assert main([*argv, "--augment", "translation", "--out", str(run)]) == 0
    assert load_model(run).config.augment == "translation"
    stored = RunConfig.from_flat({"model": "gan", "data": "digits", "augment": "cutout"}).to_dict()
    del stored["settings"]["augment"]  # a run written before the setting existed
    assert RunConfig.from_dict(stored).settings.augment == "none"
    # a run written before lazy regularisation took the penalty on every critic step
    for data in ("digits", "ring8"):
        stored = RunConfig.from_flat({"model": "gan", "data": data, "penalty_every": 8}).to_dict()
        del stored["settings"]["penalty_every"]
        assert RunConfig.from_dict(stored).settings.penalty_every == 1
        assert RunConfig.from_flat({"model": "gan", "data": data}).settings.penalty_every == 4
        flat = RunConfig.from_dict({"model": "gan", "data": data, "epochs": 3})  # format 1
        assert (flat.settings.penalty_every, flat.settings.augment) == (1, "none")
    assert main([*argv, "--augment", "rotation", "--out", str(tmp_path / "bad")]) != 0
    assert not (tmp_path / "bad").exists()
