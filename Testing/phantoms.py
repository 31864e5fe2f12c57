"""Small phantom specs shared by test suites and benches (each suite writes its own studies from them)."""

from __future__ import annotations

from MedAIExtension.phantom import AnatomySpec, NoduleSpec, PhantomSpec

#: A small chest (150×110×80 voxels) with an ~11 mm solid nodule (Lung-RADS 4A) and a 12 mm ground-glass one (2);
#: nodule tracking runs in about 5 s on 2 cores.
SMALL_CHEST_TWO_NODULES = PhantomSpec(
    size_ijk=(150, 110, 80),
    spacing=(1.6, 1.6, 2.2),
    seed=3,
    anatomy=AnatomySpec(body_semi_axes_mm=(115.0, 82.0), fat_mm=8.0, lung_height_mm=160.0),
    nodules=(
        NoduleSpec(11.0, "solid", lung="right", position=(0.35, 0.2, 0.3)),
        NoduleSpec(12.0, "ground-glass", lung="left", position=(0.3, -0.3, -0.3)),
    ),
)
