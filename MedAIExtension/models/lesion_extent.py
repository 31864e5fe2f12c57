"""A lesion's full extent: hysteresis on the lesion score around each lesion the filter kept.

An arg-max label map cuts a lesion where the lesion score stops winning. On thick slices and at a part-solid or
ground-glass rim the partial-volume voxels at the edge score lesion a little below lung, so the arg-max outline
sits inside the true one: a 9 mm solid nodule on 2.4 mm slices came out 6 mm across. Detection needs the strict
decision (a lenient one everywhere would add vessel junctions), the outline does not: once a component is a
kept lesion, the voxels connected to it whose lesion score is within ``logit_margin`` of the winning class's
belong to it too (the high and low thresholds of hysteresis thresholding). Growth stays within
:data:`MAX_GROWTH_MM` of the kept component, so a lesion touching a vessel or a mass touching the chest wall cannot
run along it.

The margin is catalogued with the model's lesion filter (``postprocessing.lesion_filter.extent_logit``) and
chosen on validation phantoms by :mod:`MedAIExtension.training.train_lesion_filter`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from MedAIExtension.io.image import Image
from MedAIExtension.labels import label_boxes
from MedAIExtension.models.preprocessing import crop_image
from MedAIExtension.models.resample_scores import channel_argmax, scores_to_labels

__all__ = ["MAX_GROWTH_MM", "grow_lesions"]

#: How far a kept lesion may grow beyond its arg-max outline (mm): the partial-volume rim of a 5 mm slice.
MAX_GROWTH_MM = 4.0
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected, as the lesion filter counts components


def grow_lesions(
    labelmap: np.ndarray,
    scores: np.ndarray,
    region: Image,
    channel: int,
    value: int,
    logit_margin: float,
    model_ijk_to_ras: np.ndarray | None = None,
) -> np.ndarray:
    """Grow every component of ``value`` in ``labelmap`` (on ``region``'s grid) into the voxels connected to it
    whose lesion score (``scores[channel]``) is within ``logit_margin`` of the best channel; in place, returned.

    ``scores`` (C, K, J, I) lie on the model grid ``model_ijk_to_ras`` (linearly interpolated onto ``region``'s
    voxels, as :func:`~MedAIExtension.models.resample_scores.scores_to_labels` does) or, when it is None, on
    ``region``'s grid itself. A margin of 0 or less changes nothing.
    """
    if logit_margin <= 0.0:
        return labelmap
    box = label_boxes(labelmap, [value]).get(value)
    if box is None:
        return labelmap
    components, _ = ndimage.label(labelmap[box] == value, structure=_CONNECTIVITY)
    offset = np.array([s.start for s in box])
    biased = scores.copy()
    biased[channel] += np.float32(logit_margin)
    spacing = np.array(region.spacing[::-1], dtype=float)  # (k, j, i)
    pad = np.ceil(MAX_GROWTH_MM / spacing).astype(int) + 1
    for index, sub in enumerate(ndimage.find_objects(components), start=1):
        if sub is None:
            continue
        lo = np.maximum(offset + [s.start for s in sub] - pad, 0)
        hi = np.minimum(offset + [s.stop for s in sub] + pad, labelmap.shape)
        window = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
        seed = np.zeros(tuple(int(b - a) for a, b in zip(lo, hi, strict=True)), dtype=bool)
        inner = tuple(slice(int(o + s.start - a), int(o + s.stop - a)) for o, s, a in zip(offset, sub, lo, strict=True))
        seed[inner] = components[sub] == index
        near = ndimage.distance_transform_edt(~seed, sampling=spacing) <= MAX_GROWTH_MM
        if model_ijk_to_ras is None:
            lenient = channel_argmax(biased[(slice(None), *window)]) == channel
        else:
            lenient = scores_to_labels(biased, model_ijk_to_ras, crop_image(region, window)) == channel
        lenient &= near
        joined, _ = ndimage.label(lenient | seed, structure=_CONNECTIVITY)
        keep = np.unique(joined[seed])
        labelmap[window][np.isin(joined, keep[keep > 0]) & lenient] = value
    return labelmap
