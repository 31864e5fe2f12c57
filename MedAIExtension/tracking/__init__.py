"""Longitudinal lung-nodule tracking: detect, segment, measure, register, match, grow, categorise (Qt-free)."""
