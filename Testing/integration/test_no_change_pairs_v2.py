"""Growth only when it is real, on phantom-v2: a repositioned, re-noised patient shows nothing growing or new.

The pairs are :func:`MedAIExtension.phantom.no_change.no_change_followup`: random acquisitions (0.5-5 mm slices,
soft to sharp kernels), lung findings (fissures, airways, emphysema, fibrosis, atelectasis, effusion, granulomas,
scars, streaks), lesions of 3-30 mm and sometimes a mass, a rigid motion of up to 3 degrees and 8 mm and new
noise. ``medai track``'s pipeline with its default options (model and classical detector) runs on each.
"""

from __future__ import annotations

import pytest

from MedAIExtension.phantom.followup import generate_phantom_pair
from MedAIExtension.phantom.no_change import NO_CHANGE_SEEDS, no_change_followup
from MedAIExtension.tracking.pipeline import TrackingOptions, track_nodules
from MedAIExtension.tracking.types import NoduleStatus, NoduleTrend


@pytest.mark.slow
@pytest.mark.parametrize("seed", NO_CHANGE_SEEDS, ids=[f"seed {s}" for s in NO_CHANGE_SEEDS])
def test_no_change_pair_reports_nothing_growing_or_new(seed: int) -> None:
    pair = generate_phantom_pair(no_change_followup(seed), interval_days=180)
    result = track_nodules(pair.baseline.ct, pair.followup.ct, TrackingOptions(interval_days=180))
    rows = "\n".join(
        f"{r['tracking_id']} {r['status']} {r['trend']} {r['baseline_mean_diameter_mm']} -> "
        f"{r['followup_mean_diameter_mm']} mm, {r['volume_change_percent']} %"
        for r in result.rows()
    )
    print(f"\nseed {seed}:\n{rows}")
    assert result.registered
    assert not [n.tracking_id for n in result.nodules if n.trend is NoduleTrend.GROWING], rows
    assert not [n.tracking_id for n in result.nodules if n.status is NoduleStatus.NEW], rows
