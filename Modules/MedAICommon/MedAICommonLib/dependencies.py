"""Python packages MedAI needs inside Slicer, installed on first use after the user agrees.

torch comes from the SlicerPyTorch extension (``PyTorchUtils`` picks the build that fits the GPU driver); the rest
comes from ``Resources/requirements.txt`` through ``pip_ensure`` (Slicer >= 5.12) or ``slicer.util.pip_install``.
Only requirements that are missing or too old are installed, so packages bundled with Slicer are left alone.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["ensureDependencies", "missingRequirements", "packageParent", "requirementsFile", "workerPython"]

_MODULE_DIR = Path(__file__).resolve().parents[1]
# Installed, MedAIExtension and Resources/ sit beside the module file; in a source checkout they are two folders up.
_ROOTS = (_MODULE_DIR, _MODULE_DIR.parents[1])
REQUESTER = "MedAI"


def requirementsFile() -> Path | None:
    """``Resources/requirements.txt`` of the installed extension or of the source checkout (None if absent)."""
    candidates = [root / "Resources" / "requirements.txt" for root in _ROOTS]
    return next((path for path in candidates if path.is_file()), None)


def packageParent() -> Path:
    """The folder that holds the ``MedAIExtension`` package."""
    return next((root for root in _ROOTS if (root / "MedAIExtension" / "__init__.py").is_file()), _MODULE_DIR)


def missingRequirements(path: str | os.PathLike[str]) -> list[Any]:
    """Requirements of a requirements file that apply to this platform and are not installed in a matching version.

    Returns ``packaging.requirements.Requirement`` objects, in file order.
    """
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:  # a Slicer without the packaging distribution: use pip's copy
        from pip._vendor.packaging.requirements import Requirement

    missing = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(requirement)
    return missing


def _pipEnsure() -> Any:
    """``pip_ensure`` of this Slicer (slicer.packaging in 5.12+, earlier slicer.pydeps / slicer.util), or None."""
    for name in ("slicer.packaging", "slicer.pydeps", "slicer.util"):
        with contextlib.suppress(ImportError):
            function = getattr(importlib.import_module(name), "pip_ensure", None)
            if function is not None:
                return function
    return None


def ensureDependencies() -> bool:
    """Make torch and the requirements importable, asking the user first. Returns False if the user declines.

    Raises:
        MedAIExtension.errors.InputError: the PyTorch extension is not installed.
        subprocess.CalledProcessError: pip failed.
    """
    import slicer

    path = requirementsFile()
    missing = missingRequirements(path) if path else []
    needTorch = importlib.util.find_spec("torch") is None
    if not missing and not needTorch:
        return True
    items = ["• torch (for MONAI models; installed by the PyTorch extension)"] if needTorch else []
    items += [f"• {requirement}" for requirement in missing]
    if not slicer.util.confirmOkCancelDisplay(
        "MedAI needs these Python packages to run its segmentation models and write DICOM objects. They are "
        "installed once into Slicer's Python (internet access needed; this can take several minutes). Only "
        "packages that are missing or too old are installed.\n\n" + "\n".join(items),
        windowTitle="MedAI - install Python packages",
    ):
        return False
    if needTorch:
        try:
            import PyTorchUtils
        except ImportError:
            from MedAIExtension.errors import InputError

            raise InputError(
                "MedAI needs the PyTorch extension to install torch: install 'PyTorch' from the Extensions Manager, "
                "restart Slicer and click Apply again."
            ) from None
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
            return False
    if missing:
        pipEnsure = _pipEnsure()
        if pipEnsure is None:
            slicer.util.pip_install([str(requirement) for requirement in missing])
        else:  # the user already confirmed: no second prompt
            parameters = inspect.signature(pipEnsure).parameters
            noPrompt = {name: False for name in ("prompt_install", "prompt") if name in parameters}
            pipEnsure(missing, requester=REQUESTER, **noPrompt)
    return True


def workerPython() -> str | None:
    """The Python that runs worker processes: PythonSlicer (inside Slicer ``sys.executable`` is the application)."""
    return shutil.which("PythonSlicer")
