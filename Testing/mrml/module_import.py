"""Importing a MedAI module's Slicer-side code headless, the way Slicer would (for the module-logic tests)."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parents[2] / "Modules"


#: The hidden module every MedAI module depends on (Slicer loads it first, so its folder is always on sys.path).
COMMON = "MedAICommon"


def import_module_code(monkeypatch: pytest.MonkeyPatch, name: str, modules: Sequence[str] = ()) -> types.ModuleType:
    """Import ``name`` (e.g. ``"MedAISegmentationLib.logic"``) with each folder of ``modules`` on ``sys.path``.

    ``MedAICommon`` is always there, as it is in Slicer (every MedAI module declares it as a dependency). Slicer's
    ``ScriptedLoadableModule`` exists only in the GUI application, so a stand-in with an empty
    ``ScriptedLoadableModuleLogic`` base class replaces it; the module packages are imported afresh.
    """
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogic", (), {})
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    modules = [COMMON, *(module for module in modules if module != COMMON)]
    for module in modules:
        monkeypatch.syspath_prepend(str(MODULES / module))
    prefixes = tuple(f"{module}Lib" for module in modules)
    for loaded in [loaded for loaded in sys.modules if loaded.startswith(prefixes)]:
        monkeypatch.delitem(sys.modules, loaded)
    return importlib.import_module(name)
