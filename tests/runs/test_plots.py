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
