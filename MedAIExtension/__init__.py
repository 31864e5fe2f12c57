"""MedAIExtension: the Qt-free logic shared by the MedAI Slicer modules, the ``medai`` CLI and the gateway.

Heavy dependencies (torch, MONAI, ONNX Runtime, highdicom, VTK/MRML) are imported lazily inside the code
paths that need them, so importing this package is cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
