"""What one explanation run is asked to do — shared by ``medai explain``, the worker job and the Slicer module.

:func:`add_explain_arguments` defines the command-line options once; :meth:`ExplainRequest.from_arguments`
turns parsed arguments into a validated request.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from MedAIExtension.errors import InputError
from MedAIExtension.explain.types import ExplainMethod, Roi

__all__ = ["ExplainRequest", "ExplainSettings", "Roi", "add_explain_arguments"]


@dataclass(frozen=True, kw_only=True)
class ExplainSettings:
    """How the chosen method runs (keyword-only; validated on construction).

    Attributes:
        layer: Grad-CAM target layer (default: the catalogue's ``explain.target_layer``, else found).
        sanity: run the sanity checks (randomisation, deletion/insertion) next to the map.
        mask_size, stride, baseline: occlusion settings (voxels on the model grid; baseline value or ``mean``).
        ig_steps: integrated-gradients path steps.
        tta_flips, mc_dropout: uncertainty settings.
        batch_size: forward passes per batch (occlusion, deletion/insertion, IG); halves on out-of-memory.
    """

    layer: str | None = None
    sanity: bool = True
    mask_size: int = 8
    stride: int = 4
    baseline: float | str = 0.0
    ig_steps: int = 32
    tta_flips: int = 4
    mc_dropout: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.mask_size < 1 or self.stride < 1:
            raise InputError(f"Occlusion mask size and stride must be ≥ 1 voxel (got {self.mask_size}, {self.stride}).")
        if self.ig_steps < 2:
            raise InputError(f"Integrated gradients needs at least 2 steps, got {self.ig_steps}.")
        if not 1 <= self.tta_flips <= 8:
            raise InputError(f"--tta-flips must be 1..8 (flip combinations incl. none), got {self.tta_flips}.")
        if self.mc_dropout < 0:
            raise InputError(f"--mc-dropout must be ≥ 0 passes, got {self.mc_dropout}.")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {self.batch_size}.")
        if isinstance(self.baseline, str) and self.baseline != "mean":
            try:
                object.__setattr__(self, "baseline", float(self.baseline))
            except ValueError:
                raise InputError(f"--baseline must be a number or 'mean', got {self.baseline!r}.") from None


@dataclass(frozen=True)
class ExplainRequest(ExplainSettings):
    """One explanation run: what to explain, where the results go, and (inherited) how the method runs.

    Attributes:
        input: DICOM series folder or volume file (.nii.gz, .nrrd).
        model: catalogue model name.
        method: the explanation method.
        output: output folder.
        target: label value or name to explain (default: the catalogue's ``explain.target_label``, else the
            first label).
        roi: where to look; classification models explain the patch centred on it, segmentation models
            explain the region score inside it.
        device: ``auto``, ``cpu`` or ``cuda``.
        write_dicom: write the Parametric Map and Secondary Capture when the input is a DICOM series.
        series: SeriesInstanceUID when the input folder holds several series.
        models_dirs: extra folders with user models.
    """

    input: Path
    model: str
    method: ExplainMethod
    output: Path
    target: str | None = None
    roi: Roi | None = None
    device: str = "auto"
    write_dicom: bool = True
    series: str | None = None
    models_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "method", ExplainMethod.parse(self.method))
        object.__setattr__(self, "input", Path(self.input))
        object.__setattr__(self, "output", Path(self.output))

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> ExplainRequest:
        """A request from parsed :func:`add_explain_arguments` options."""
        return cls(
            input=Path(args.input),
            model=args.model,
            method=args.method,
            output=Path(args.output),
            target=args.target,
            roi=Roi.parse(args.roi) if args.roi else None,
            layer=args.layer,
            device=args.device,
            sanity=not args.no_sanity,
            mask_size=args.mask_size,
            stride=args.stride,
            baseline=args.baseline,
            ig_steps=args.ig_steps,
            tta_flips=args.tta_flips,
            mc_dropout=args.mc_dropout,
            batch_size=args.batch_size,
            write_dicom=not args.no_dicom,
            series=args.series,
            models_dirs=tuple(args.models_dir or ()),
        )

    def to_arguments(self) -> list[str]:
        """The command-line options that reproduce this request (for the worker process)."""
        args = ["--input", str(self.input), "--model", self.model, "--method", self.method.value]
        args += ["--output", str(self.output), "--device", self.device]
        if self.target is not None:
            args += ["--target", str(self.target)]
        if self.roi is not None:
            args += ["--roi", *(repr(v) for v in (*self.roi.center_ras, *self.roi.size_mm))]
        if self.layer:
            args += ["--layer", self.layer]
        if not self.sanity:
            args.append("--no-sanity")
        args += ["--mask-size", str(self.mask_size), "--stride", str(self.stride), "--baseline", str(self.baseline)]
        args += ["--ig-steps", str(self.ig_steps), "--tta-flips", str(self.tta_flips)]
        args += ["--mc-dropout", str(self.mc_dropout), "--batch-size", str(self.batch_size)]
        if not self.write_dicom:
            args.append("--no-dicom")
        if self.series:
            args += ["--series", self.series]
        for folder in self.models_dirs:
            args += ["--models-dir", folder]
        return args


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``explain`` options to ``parser`` (the CLI and the worker share them)."""
    methods = [m.value for m in ExplainMethod]
    parser.add_argument("--input", required=True, help="DICOM folder, .nii.gz or .nrrd")
    parser.add_argument("--model", required=True, help="model name ('medai models' lists them)")
    parser.add_argument("--method", required=True, choices=methods, help="explanation method")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--target", default=None, help="label value or name to explain (default: catalogue)")
    parser.add_argument(
        "--roi",
        type=float,
        nargs=6,
        default=None,
        metavar=("R", "A", "S", "SR", "SA", "SS"),
        help="ROI centre (RAS mm) and size (mm); required for a patch classifier on an image larger than its patch",
    )
    parser.add_argument("--layer", default=None, help="Grad-CAM target layer (default: catalogue)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-sanity", action="store_true", help="skip the sanity checks")
    parser.add_argument("--mask-size", type=int, default=8, help="occlusion window (voxels on the model grid)")
    parser.add_argument("--stride", type=int, default=4, help="occlusion stride (voxels)")
    parser.add_argument("--baseline", default="0.0", help="occlusion fill value (normalised) or 'mean'")
    parser.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients steps")
    parser.add_argument("--tta-flips", type=int, default=4, help="uncertainty: flip combinations (1-8)")
    parser.add_argument("--mc-dropout", type=int, default=0, help="uncertainty: MC-dropout passes (torch models)")
    parser.add_argument("--batch-size", type=int, default=16, help="forward passes per batch")
    parser.add_argument("--no-dicom", action="store_true", help="do not write DICOM objects")
    parser.add_argument("--series", default=None, help="SeriesInstanceUID when the folder holds several series")
    parser.add_argument("--models-dir", action="append", help="extra folder with user models")
