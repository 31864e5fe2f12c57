"""Tubes with their index ranges on a chunked grid, for a quick overlap test against each slab of slices."""

from __future__ import annotations

import numpy as np

from MedAIExtension.phantom.anatomy import Tube
from MedAIExtension.phantom.grid import Block, ChunkGrid, slab_block

__all__ = ["TubeBoxes"]


class TubeBoxes:
    """Tubes with their index ranges precomputed, for a quick overlap test against each slab."""

    def __init__(self, grid: ChunkGrid, tubes: list[Tube], margin: float) -> None:
        self.tubes = tubes
        if tubes:
            bounds = [tube.bounds(margin) for tube in tubes]
            self.first, self.last = grid.index_ranges(
                np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
            )

    def overlapping(self, k0: int, k1: int) -> list[tuple[Tube, Block]]:
        """The tubes whose box meets slices k0..k1, each with its block relative to the slab."""
        if not self.tubes:
            return []
        first, last = self.first, self.last
        hits = (first[:, 2] < k1) & (last[:, 2] > k0) & (first[:, 0] < last[:, 0]) & (first[:, 1] < last[:, 1])
        out = []
        for n in np.nonzero(hits)[0]:
            block = slab_block(first[n], last[n], k0, k1)
            if block is not None:
                out.append((self.tubes[n], block))
        return out
