"""The MRML bridge: images and label maps in, Slicer nodes out (and back).

Every function takes the ``scene`` (or a node) as a parameter: the application scene inside Slicer,
:func:`create_scene` elsewhere (tests, CLI). Nothing here imports Qt or Slicer's application globals, and
MRML (the ``slicer`` module of Slicer or of the ``slicer-core`` wheel) is only imported when a function runs.
"""

from MedAIExtension.labels import CodedTerm, SegmentLabel
from MedAIExtension.mrml.scene import SceneLogics, close_scene, create_scene, scene_logics
from MedAIExtension.mrml.segmentations import (
    LABEL_VALUE_TAG,
    labelmap_to_segmentation_node,
    segment_label_values,
    segmentation_node_to_labelmap,
    terminology_entry,
)
from MedAIExtension.mrml.storage import write_seg_nrrd
from MedAIExtension.mrml.tables import segment_statistics, statistics_to_table_node
from MedAIExtension.mrml.volumes import image_to_volume_node, volume_node_to_image

__all__ = [
    "LABEL_VALUE_TAG",
    "CodedTerm",
    "SceneLogics",
    "SegmentLabel",
    "close_scene",
    "create_scene",
    "image_to_volume_node",
    "labelmap_to_segmentation_node",
    "scene_logics",
    "segment_label_values",
    "segment_statistics",
    "segmentation_node_to_labelmap",
    "statistics_to_table_node",
    "terminology_entry",
    "volume_node_to_image",
    "write_seg_nrrd",
]
