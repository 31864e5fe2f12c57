"""The headless scene: real MRML with the logics Slicer registers."""

from __future__ import annotations

import gc

import slicer

from MedAIExtension.io.image import Image
from MedAIExtension.labels import SegmentLabel
from MedAIExtension.mrml import close_scene, create_scene, labelmap_to_segmentation_node, scene_logics


def test_create_scene_registers_segmentations_logic() -> None:
    scene = create_scene()
    logics = scene_logics(scene)
    assert logics is not None
    assert logics.application.GetMRMLScene() is scene
    registered = logics.application.GetModuleLogic("Segmentations")
    assert registered is logics.segmentations
    assert registered.GetMRMLScene() is scene


def test_logics_outlive_python_references() -> None:
    scene = create_scene()
    gc.collect()
    assert scene_logics(scene).application.GetModuleLogic("Segmentations").GetMRMLScene() is scene


def test_binary_labelmap_converter_rules_are_available() -> None:
    """The Segmentations logic registers them when it gets a scene; segmentations cannot convert without them."""
    create_scene()
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    names = {
        (rule.GetSourceRepresentationName(), rule.GetTargetRepresentationName()) for rule in factory.GetConverterRules()
    }
    assert ("Binary labelmap", "Closed surface") in names


def test_scene_has_default_colour_tables() -> None:
    scene = create_scene()
    assert scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is not None


def test_foreign_scene_has_no_logics() -> None:
    assert scene_logics(slicer.vtkMRMLScene()) is None


def test_close_scene_frees_it(labelmap: Image, labels: tuple[SegmentLabel, ...]) -> None:
    """The logics keep the scene alive until close_scene detaches them (long-running processes need this)."""
    scene = create_scene()
    labelmap_to_segmentation_node(scene, labelmap, labels, "Segmentation")
    deleted: list[bool] = []
    scene.AddObserver("DeleteEvent", lambda *_: deleted.append(True))
    close_scene(scene)
    assert scene_logics(scene) is None
    assert scene.GetNumberOfNodes() == 0
    del scene
    gc.collect()
    assert deleted == [True]
