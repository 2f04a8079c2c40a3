"""Figures whose content can be read back: the image grid is one tiled picture."""

import numpy as np
import torch

from pushforward.runs import plots


def test_an_image_grid_tiles_the_images_row_by_row_with_one_pixel_gaps():
    images = torch.rand(7, 6, generator=torch.Generator().manual_seed(0))  # seven 2×3 images
    fig = plots.image_grid(images, (2, 3), ncols=3, title="t")
    (ax,) = fig.axes
    (picture,) = ax.images
    tiled = np.asarray(picture.get_array())
    assert tiled.shape == (3 * 3 - 1, 3 * 4 - 1)  # 3 rows of 2 pixels, 3 columns of 3, gaps of 1
    for i in range(7):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(
            tiled[3 * r : 3 * r + 2, 4 * c : 4 * c + 3], images[i].reshape(2, 3).numpy()
        )
    gaps = np.ones_like(tiled, dtype=bool)
    for r in range(3):
        for c in range(3):
            gaps[3 * r : 3 * r + 2, 4 * c : 4 * c + 3] = False
    assert (tiled[gaps] == 0).all()  # white (0 in gray_r) between images
    assert (tiled[6:8, 4:11] == 0).all()  # the cells after the seventh image stay empty


def test_a_blitted_scatter_gif_shows_each_frame_as_a_full_render_does():
    """scatter_gif draws the axes once and blits each frame's points and title: every frame
    matches scatter_2d's own render of it at the same resolution (up to the legend, kept where
    the first frame put it, and points crossing the frame: < 1% of the pixels), and the frames
    differ from each other where the points moved."""
    import io

    from PIL import Image, ImageSequence

    g = torch.Generator().manual_seed(0)
    background = torch.randn(500, 2, generator=g)
    frames = [(0.3 * k * torch.randn(300, 2, generator=g), f"step {k}") for k in range(1, 5)]
    limits = (-3.0, 3.0, -3.0, 3.0)
    gif = plots.scatter_gif(background, frames, label="g#μ", ax_limits=limits)
    with Image.open(io.BytesIO(gif)) as im:
        got = [np.asarray(f.convert("RGB"), dtype=int) for f in ImageSequence.Iterator(im)]
    assert len(got) == len(frames)
    for (points, title), frame in zip(frames, got, strict=True):
        buf = io.BytesIO()
        fig = plots.scatter_2d(background, others=[(points, "g#μ")], title=title, size=1.5,
                               ax_limits=limits)  # fmt: skip
        fig.savefig(buf, format="png", dpi=80)
        want = np.asarray(Image.open(buf).convert("RGB"), dtype=int)
        assert want.shape == frame.shape
        assert (np.abs(want - frame).max(-1) > 40).mean() < 0.01
        strip = slice(0, 20)  # above the axes: the title alone, drawn in dark text
        assert (want[strip] < 100).any()
        assert (np.abs(want[strip] - frame[strip]).max(-1) > 40).mean() < 0.01
    assert (np.abs(got[0] - got[-1]).max(-1) > 40).mean() > 0.01  # the points moved
