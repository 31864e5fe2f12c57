"""The MRML bridge: images and label maps in, Slicer nodes out (and back).

Every function takes the ``scene`` (or a node) as a parameter: the application scene inside Slicer,
:func:`create_scene` elsewhere (tests, CLI). Nothing here imports Qt or Slicer's application globals, and
MRML (the ``slicer`` module of Slicer or of the ``slicer-core`` wheel) is only imported when a function runs.
"""

from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.mrml.markups import fiducial_points, nodule_fiducials_node
from MedAIExtension.mrml.plots import chart_series, volume_over_time_chart
from MedAIExtension.mrml.scene import SceneLogics, close_scene, create_scene, scene_logics
from MedAIExtension.mrml.segmentations import (
    LABEL_VALUE_TAG,
    labelmap_to_segmentation_node,
    segment_label_values,
    segmentation_node_to_labelmap,
    terminology_entry,
)
from MedAIExtension.mrml.storage import write_seg_nrrd
from MedAIExtension.mrml.tables import rows_to_table_node, segment_statistics, statistics_to_table_node
from MedAIExtension.mrml.transforms import (
    linear_transform_node,
    ras_matrix_from_sitk,
    sitk_transform_node,
    transform_matrix,
)
from MedAIExtension.mrml.volumes import image_to_volume_node, volume_node_to_image

__all__ = [
    "LABEL_VALUE_TAG",
    "CodedTerm",
    "SceneLogics",
    "SegmentLabel",
    "chart_series",
    "close_scene",
    "create_scene",
    "fiducial_points",
    "image_to_volume_node",
    "labelmap_to_segmentation_node",
    "linear_transform_node",
    "nodule_fiducials_node",
    "ras_matrix_from_sitk",
    "rows_to_table_node",
    "scene_logics",
    "segment_label_values",
    "segment_statistics",
    "segmentation_node_to_labelmap",
    "sitk_transform_node",
    "statistics_to_table_node",
    "terminology_entry",
    "transform_matrix",
    "volume_node_to_image",
    "volume_over_time_chart",
    "write_seg_nrrd",
]
