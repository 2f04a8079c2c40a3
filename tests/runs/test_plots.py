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


def test_samples_over_the_data_stand_out_in_their_own_colour():
    """A scatter's layers over the data (model samples) are drawn in LAYER_COLORS, orange
    first, not in the default cycle's blue a shade from the data's: in the rendered image and in
    the animation's frames, the samples' pixels are orange and the data's stay blue."""
    import io

    from PIL import Image

    def share(image: np.ndarray, rgb: str) -> float:
        """The share of pixels within 40 of ``rgb`` blended at alpha 0.6 or more over white."""
        c = np.array([int(rgb[i : i + 2], 16) for i in (1, 3, 5)])
        blended = 0.6 * c + 0.4 * 255
        return float((np.abs(image - blended).max(-1) < 40).mean())

    g = torch.Generator().manual_seed(0)
    data = torch.randn(400, 2, generator=g) - 2
    samples = torch.randn(400, 2, generator=g) + 2  # apart from the data: no blending
    fig = plots.scatter_2d(data, others=[(samples, "g#μ")], size=8.0)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    image = np.asarray(Image.open(buf).convert("RGB"), dtype=float)
    assert share(image, plots.LAYER_COLORS[0]) > 0.002  # the orange samples
    assert share(image, plots.DATA_COLOR) > 0.002  # the blue data
    gif = plots.scatter_gif(data, [(samples, "epoch 1")], label="g#μ", size=8.0)
    with Image.open(io.BytesIO(gif)) as im:
        frame = np.asarray(im.convert("RGB"), dtype=float)  # the first frame
    assert share(frame, plots.LAYER_COLORS[0]) > 0.002
