"""Explainability: Grad-CAM, Grad-CAM++, occlusion sensitivity, integrated gradients and segmentation
uncertainty, with sanity checks, as maps on the input grid for Slicer overlays and DICOM Parametric Maps."""
