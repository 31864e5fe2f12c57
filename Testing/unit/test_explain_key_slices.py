"""Key-slice pictures of an explanation: orientation letters from the direction matrix, colour bar, scale bar and
caption, checked on small volumes stored LPS, RAS and with permuted axes (the letters must match where a marker
placed at a known RAS position actually appears)."""

from __future__ import annotations

import numpy as np
import pytest

from MedAIExtension.explain.overlay_png import edge_letters, key_slices, orientation_letters
from MedAIExtension.io.image import Image

MARKER_RAS = np.array([5.0, 5.0, 5.0])  # patient right, anterior, superior of the centre
EXPECTED = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}


def test_orientation_letters_of_ras_directions() -> None:
    assert [orientation_letters(v) for v in np.eye(3)] == ["R", "A", "S"]
    assert [orientation_letters(-v) for v in np.eye(3)] == ["L", "P", "I"]
    assert orientation_letters([0.8, -0.6, 0.0]) == "RP"  # oblique: main axis first
    assert orientation_letters([0.1, 0.0, -0.99]) == "I"  # a slight tilt is not named
    lps_axial = edge_letters(right_ras=[-1.0, 0, 0], down_ras=[0, -1.0, 0])
    assert lps_axial == EXPECTED["axial"]
    with pytest.raises(ValueError, match="three components"):
        orientation_letters([0.0, 0.0, 0.0])


def _volume(direction_ras: np.ndarray) -> tuple[Image, Image]:
    """A 20 mm air cube with a bright block (and the map's peak) at :data:`MARKER_RAS`, on the given axes."""
    affine = np.eye(4)
    affine[:3, :3] = direction_ras
    affine[:3, 3] = -direction_ras @ np.full(3, 9.5)  # the cube's centre at RAS 0
    array = np.full((20, 20, 20), -1000, dtype=np.int16)
    i, j, k = np.rint(np.linalg.solve(direction_ras, MARKER_RAS - affine[:3, 3])).astype(int)
    array[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 400
    image = Image(array, affine, modality="CT")
    values = np.zeros(array.shape, dtype=np.float32)
    values[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 1.0
    values[k, j, i] = 2.0
    return image, image.with_array(values, modality="")


@pytest.mark.parametrize(
    "direction",
    [np.diag([-1.0, -1.0, 1.0]), np.eye(3), np.array([[0, 0, 1.0], [0, -1.0, 0], [1.0, 0, 0]])],
    ids=["LPS", "RAS", "permuted"],
)
def test_letters_match_where_the_anatomy_appears(direction: np.ndarray) -> None:
    image, values = _volume(direction)
    pictures = key_slices(image, values, (0.0, 2.0), 0.2, title="Grad-CAM of 'Nodule'", unit="relevance")
    assert [p.plane for p in pictures] == ["axial", "coronal", "sagittal"]
    for picture in pictures:
        assert picture.letters == EXPECTED[picture.plane], picture.plane
        panel = picture.rgb[:384, :384].astype(int)  # a cube: the image panel is 384 x 384 pixels
        marker = panel[..., 2] > 100  # the blended marker; letters and scale bar are yellow (no blue)
        rows, cols = np.nonzero(marker)
        assert rows.size, picture.plane
        # the marker lies towards the left edge's letter and the top edge's letter (R/A/S of the centre)
        assert cols.mean() < 192 and rows.mean() < 192, (picture.plane, cols.mean(), rows.mean())


def test_picture_has_colour_bar_scale_bar_and_caption() -> None:
    image, values = _volume(np.diag([-1.0, -1.0, 1.0]))
    axial = key_slices(image, values, (0.0, 2.0), 0.4, title="Grad-CAM of 'Nodule'", unit="relevance")[0]
    height, width = axial.rgb.shape[:2]
    assert width == 384 + 72 and height > 384 + 20  # colour bar on the right, caption band below
    bar = axial.rgb[20:360, 384 + 6 : 384 + 20].astype(int)
    assert bar[0].min() > 200 and bar[-1].max() < 40  # white (high) at the top, black at 0
    caption = axial.rgb[390:, :]
    assert (caption == 255).mean() > 0.8 and (caption < 100).any()  # dark text on a white band
    assert axial.scale_bar_mm == 5.0  # a quarter of 20 mm, rounded down to 1-2-5
    peak_k = int(np.argmax(values.array.max(axis=(1, 2))))
    assert axial.index == peak_k and abs(axial.position_mm - 5.0) <= 0.5  # S of the marker's slice
    yellow = np.all(axial.rgb[:384, :384] == [255, 255, 0], axis=-1)
    assert yellow[340:, :100].any()  # the scale bar in the lower left corner
