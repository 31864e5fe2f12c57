"""Where lung lesions can be: inside the lungs' envelope, slice by slice.

A lung nodule or mass lies in the lung or pushes into it from the pleura; it never lies wholly in the chest wall,
the abdomen below the diaphragm or the heart. The envelope of a lung in an axial slice is the convex hull of its
cross-section (each connected piece of the lung label in that slice hulled on its own, so the two lungs do not
bridge the mediastinum): a mass at the chest wall or the hilum sits in the lung's concavity and so inside its hull,
chest-wall muscle below a lung base does not. Slices are taken along the image axis closest to the body's
superior-inferior axis, whatever the acquisition plane.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from MedAIExtension.io.image import Image

__all__ = ["LungEnvelope"]

_MIN_PIECE_VOXELS = 20


class LungEnvelope:
    """The per-slice convex hulls of a label map's lung label, computed for the slices asked about (cached)."""

    def __init__(self, labelmap: np.ndarray, ct: Image, lung_label: int) -> None:
        self.labelmap = labelmap
        self.lung_label = lung_label
        directions = np.asarray(ct.ijk_to_ras, dtype=float)[:3, :3]
        along = int(np.argmax(np.abs(directions[2]) / np.linalg.norm(directions, axis=0)))  # ijk axis nearest S-I
        self.axis = 2 - along  # array axes are (k, j, i)
        self._slices: dict[int, np.ndarray] = {}

    def _hull(self, index: int) -> np.ndarray:
        if index not in self._slices:
            lung = np.take(self.labelmap, index, axis=self.axis) == self.lung_label
            hull = np.zeros(lung.shape, dtype=bool)
            pieces, _ = ndimage.label(lung)
            for number, box in enumerate(ndimage.find_objects(pieces), start=1):
                if box is None:
                    continue
                piece = pieces[box] == number
                if piece.sum() >= _MIN_PIECE_VOXELS:
                    hull[box] |= convex_hull_image(piece)
            self._slices[index] = hull
        return self._slices[index]

    def fraction_inside(self, points_kji: np.ndarray) -> float:
        """The share of the voxels ``points_kji`` (rows of k, j, i) inside the envelope."""
        if len(points_kji) == 0:
            return 0.0
        inside = 0
        others = [a for a in range(3) if a != self.axis]
        for index in np.unique(points_kji[:, self.axis]):
            rows = points_kji[points_kji[:, self.axis] == index]
            hull = self._hull(int(index))
            inside += int(hull[rows[:, others[0]], rows[:, others[1]]].sum())
        return inside / len(points_kji)
