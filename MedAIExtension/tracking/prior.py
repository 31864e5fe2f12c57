"""Carrying Tracking UIDs over from the report of the prior study.

When a follow-up arrives, the baseline study may already have a MedAI tracking SR (written when the baseline was
assessed on its own, e.g. by the PACS gateway). A viewer links a nodule across studies by its Tracking Unique
Identifier, so the follow-up report must reuse the UID (and identifier) the prior report gave the same nodule.
The prior report's nodules are found again by overlap: its SEG segments lie on the baseline grid, where this run
segmented the baseline nodules too.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

import numpy as np

from MedAIExtension.dicom import read_dicom_seg, segment_value_map
from MedAIExtension.dicom.sr import read_tracking_sr, tracking_uid_for
from MedAIExtension.tracking.pipeline import TrackingResult

__all__ = ["adopt_prior_tracking"]

_NUMBERED = re.compile(r"^N(\d{1,3})$")
#: A prior segment and a baseline nodule are the same nodule when they share this fraction of the smaller one.
MIN_OVERLAP = 0.3


def _segment_sizes(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def adopt_prior_tracking(
    result: TrackingResult,
    prior_sr: str | os.PathLike[str],
    prior_seg: str | os.PathLike[str],
) -> list[str]:
    """Give the nodules of ``result`` that the prior report tracked that report's Tracking UID and identifier.

    Args:
        result: a tracking run whose baseline is the prior study (read from its DICOM series).
        prior_sr: the prior study's tracking SR (:func:`~MedAIExtension.dicom.sr.write_tracking_sr`).
        prior_seg: the SEG that SR references, made from the same baseline series.

    A baseline nodule takes over a prior nodule when their masks overlap by at least 30 % of the smaller one
    (one-to-one, largest overlap first). Nodules numbered ``N<k>`` in the prior report keep number ``k`` (so
    colours and identifiers match across reports); other nodules are renumbered after them and get fresh
    Tracking UIDs that cannot collide with the prior report's.

    Returns:
        Warnings in words (prior nodules not found again in this run). ``result.nodules`` is updated in place.

    Raises:
        InputError: the files are not a readable tracking SR / SEG, or the SEG is not on the baseline's frame.
    """
    import highdicom as hd

    groups = read_tracking_sr(prior_sr)
    header = hd.seg.segread(prior_seg, lazy_frame_retrieval=True)  # UID and segments only; pixels read below
    seg_uid = str(header.SOPInstanceUID)
    values = segment_value_map(header)
    by_value = {}
    for group in groups:
        if group["tracking_uid"] and group["seg_sop_instance_uid"] == seg_uid and group["segment_number"] in values:
            by_value[values[group["segment_number"]]] = group
    labels = read_dicom_seg(prior_seg, result.baseline.image).array
    sizes = _segment_sizes(labels)
    pairs = []
    for index, nodule in enumerate(result.nodules):
        finding = nodule.baseline
        if finding is None:
            continue
        inside = labels[finding.mask.box][finding.mask.mask]
        for value, overlap in _segment_sizes(inside).items():
            if value in by_value:
                fraction = overlap / min(finding.mask.voxel_count, sizes[value])
                if fraction >= MIN_OVERLAP:
                    pairs.append((fraction, index, value))
    adopted: dict[int, dict[str, Any]] = {}
    taken: set[int] = set()
    for _, index, value in sorted(pairs, reverse=True):
        if index not in adopted and value not in taken:
            adopted[index] = by_value[value]
            taken.add(value)
    prior_uids = {str(group["tracking_uid"]) for group in by_value.values()}
    used = set()
    for group in adopted.values():
        match = _NUMBERED.match(str(group["tracking_id"]))
        if match:
            used.add(int(match.group(1)))
    next_number = max([0, *used, *(n.number for n in result.nodules)]) + 1
    updated = []
    for index, nodule in enumerate(result.nodules):
        prior = adopted.get(index)
        if prior is not None:
            match = _NUMBERED.match(str(prior["tracking_id"]))
            number = int(match.group(1)) if match else nodule.number
            identifier = None if match else str(prior["tracking_id"])
            if not match and number in used:
                number, next_number = next_number, next_number + 1
            used.add(number)
            nodule = replace(nodule, number=number, identifier=identifier, tracking_uid=str(prior["tracking_uid"]))
        else:
            number = nodule.number
            if number in used:
                number, next_number = next_number, next_number + 1
            used.add(number)
            uid = tracking_uid_for(f"{nodule.tracking_uid}|after|{'|'.join(sorted(prior_uids))}")
            nodule = replace(nodule, number=number, tracking_uid=uid)
        updated.append(nodule)
    result.nodules[:] = sorted(updated, key=lambda n: n.number)
    missing = sorted(str(g["tracking_id"]) for v, g in by_value.items() if v not in taken)
    if missing:
        return [
            f"Prior report nodule(s) {', '.join(missing)} were not found again in the baseline study; their Tracking "
            "UIDs are not carried to the follow-up report."
        ]
    return []
