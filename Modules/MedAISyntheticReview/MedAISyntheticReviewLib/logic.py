"""Slicer-side logic of MedAI Synthetic Review: a review project (``MedAIExtension.review``) and the scene.

Qt-free and free of Slicer's application globals: the scene is a parameter, so the same code runs in Slicer and on
the ``slicer-core`` wheel in tests. The project, its grades, reader sessions, metrics and export are
``MedAIExtension.review``'s; this class only loads images as volume nodes (a synthetic image beside its reference,
or a blinded case) and formats stored results as text for the module's panels.

Blinded cases carry nothing that tells real from synthetic: the node is named "Case N", has no attributes, no
storage node and no description; every case of a session is resampled onto the session's one grid (the same
matrix, spacing and axial direction, as the blinded export writes: matrix and spacing differ between scanners and
generators) and centred at RAS (0, 0, 0) (scanner coordinates can identify a patient); its voxels are float32 (the
file's voxel type could give the class away), whole numbers in [-1024, 3071] when the intensity range is wide (CT
HU: fractional values would reveal blending).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from MedAIExtension.errors import InputError
from MedAIExtension.progress import CancelToken, Progress
from MedAIExtension.review.blinded_export import WHOLE_UNITS_RANGE

__all__ = ["BLINDED_ROUNDING_RANGE", "ReviewLogic"]

ProgressArg = Progress | Callable[[float, str], None] | None
#: Blinded voxels are rounded to whole numbers when their intensity range is wider than this (CT HU, most MR).
BLINDED_ROUNDING_RANGE = WHOLE_UNITS_RANGE


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ReviewLogic:
    """One open review project and the volume nodes it shows in ``scene``.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer, ``MedAIExtension.mrml.create_scene()`` elsewhere).
    """

    def __init__(self, scene: Any) -> None:
        if scene is None:
            raise InputError("ReviewLogic needs an MRML scene; pass slicer.mrmlScene or create_scene().")
        self.scene = scene
        self.store: Any = None
        self._pairNodes: list[Any] = []
        self._caseNode: Any = None

    # ---- project -------------------------------------------------------------------------------------------------
    def openProject(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Open an existing project file (closing the current one); returns its :meth:`projectInfo`."""
        from MedAIExtension.review.store import ReviewStore

        store = ReviewStore.open(path)
        self.closeProject()
        self.store = store
        return self.projectInfo()

    def createProject(
        self, path: str | os.PathLike[str], name: str, artifacts: list[str] | None = None
    ) -> dict[str, Any]:
        """Create a new project file (closing the current one); ``artifacts`` defaults to the standard flags."""
        from MedAIExtension.review.store import DEFAULT_ARTIFACTS, ReviewStore

        store = ReviewStore.create(path, name, artifacts=DEFAULT_ARTIFACTS if artifacts is None else artifacts)
        self.closeProject()
        self.store = store
        return self.projectInfo()

    def createDemoProject(
        self,
        folder: str | os.PathLike[str],
        realCount: int = 2,
        lesionsPerImage: int = 1,
        sizeIjk: tuple[int, int, int] = (48, 48, 32),
        progress: ProgressArg = None,
    ) -> dict[str, Any]:
        """Create ``folder``/demo.medai-review from generated chest phantoms: ``realCount`` real CTs, each with
        ``lesionsPerImage`` synthetic copies from the built-in lesion inserter (so every synthetic image has a
        parent). For trying the module out and for its self-test; small sizes take seconds."""
        from MedAIExtension.atomic import ensure_writable_directory
        from MedAIExtension.io.volume_files import write_volume_file
        from MedAIExtension.phantom import PhantomSpec, generate_chest_phantom
        from MedAIExtension.review.workflow import generate_lesions

        reporter = Progress(progress)
        out = Path(folder)
        self.createProject(out / "demo.medai-review", "MedAI demo review")
        realFolder = ensure_writable_directory(out / "real")
        spacing = (340.0 / sizeIjk[0], 340.0 / sizeIjk[1], 300.0 / sizeIjk[2])
        for index in range(realCount):
            reporter(index / max(realCount, 1), f"phantom {index + 1}/{realCount}")
            spec = PhantomSpec(size_ijk=sizeIjk, spacing=spacing, seed=index + 1)
            path = write_volume_file(generate_chest_phantom(spec).ct, realFolder / f"phantom_{index + 1}.nrrd")
            record = self.addImage(path, "real", {"generator": "medai-phantom", "seed": index + 1})
            generate_lesions(self.project, record.id, lesionsPerImage, out / "synthetic", seed=index + 1)
        reporter(1.0, "demo project ready")
        return self.projectInfo()

    def closeProject(self) -> None:
        """Close the project and remove the volume nodes this logic added (every grade is already committed)."""
        self._removePair()
        self._removeCase()
        if self.store is not None:
            self.store.close()
        self.store = None

    @property
    def project(self) -> Any:
        """The open :class:`~MedAIExtension.review.store.ReviewStore`; InputError when none is open."""
        if self.store is None:
            raise InputError("No review project is open. Choose a project file and open it, or create a new one.")
        return self.store

    def projectInfo(self) -> dict[str, Any]:
        """Name, counts, artifact vocabulary and path of the open project."""
        return self.project.project_info()

    def artifacts(self) -> tuple[str, ...]:
        """The artifact flags graders choose from."""
        return self.project.artifacts

    def syntheticImages(self) -> list[Any]:
        """The synthetic images to grade, in the order they were added."""
        return self.project.images("synthetic")

    def addImage(self, path: str | os.PathLike[str], role: str, provenance: dict[str, Any] | None = None) -> Any:
        """Add a volume file or DICOM folder to the project (see ``ReviewStore.add_image``)."""
        return self.project.add_image(path, role, provenance)

    # ---- grading -------------------------------------------------------------------------------------------------
    def referenceId(self, imageId: int) -> int | None:
        """The real image a synthetic image is compared with: its parent, else its nearest real image in the latest
        memorization check, else None."""
        record = self.project.image(imageId)
        if record.parent_id is not None:
            return int(record.parent_id)
        memorization = self.project.latest_result("memorization") or {}
        for row in memorization.get("matches", []):
            if row.get("synthetic_id") == record.id and row.get("real_id") is not None:
                return int(row["real_id"])
        return None

    def _loadVolume(self, record: Any, name: str) -> Any:
        from MedAIExtension.io.loader import load_image
        from MedAIExtension.mrml import image_to_volume_node

        return image_to_volume_node(self.scene, load_image(record.path), name)

    def loadPair(self, imageId: int) -> tuple[Any, Any | None]:
        """Load a synthetic image and its reference (:meth:`referenceId`) as volume nodes, replacing the previous pair.

        Returns:
            (synthetic node, reference node or None when the image has no reference).
        """
        record = self.project.image(imageId)
        if str(record.role) != "synthetic":
            raise InputError(f"Image {imageId} is a real image; choose a synthetic image to grade.")
        referenceId = self.referenceId(imageId)
        self._removePair()
        synthetic = self._loadVolume(record, f"Synthetic {record.id}")
        self._pairNodes.append(synthetic)
        reference = None
        if referenceId is not None:
            reference = self._loadVolume(self.project.image(referenceId), f"Reference {referenceId}")
            self._pairNodes.append(reference)
        return synthetic, reference

    def _removePair(self) -> None:
        for node in self._pairNodes:
            if node.GetScene() is self.scene:
                self.scene.RemoveNode(node)
        self._pairNodes = []

    def grade(
        self,
        imageId: int,
        reviewer: str,
        accept: bool | None,
        realism: int | None,
        artifacts: list[str] | tuple[str, ...] = (),
        comment: str = "",
        seconds: float | None = None,
    ) -> Any:
        """Record a grade, committed to the project file before this returns."""
        return self.project.grade(
            imageId, reviewer, accept=accept, realism=realism, artifacts=artifacts, comment=comment, seconds=seconds
        )

    def latestGrade(self, imageId: int, reviewer: str) -> Any | None:
        """The reviewer's newest grade of an image, or None."""
        grades = self.project.grades(image_id=imageId, reviewer=reviewer)
        return grades[-1] if grades else None

    def nextToGrade(self, reviewer: str) -> Any | None:
        """The first synthetic image the reviewer has not graded (None when all are graded)."""
        return self.project.next_ungraded(reviewer)

    # ---- blinded reader study ------------------------------------------------------------------------------------
    def startBlindSession(self, reviewer: str, perClass: int | None = None, seed: int | None = None) -> int:
        """A new balanced, randomised reader session of ``perClass`` real and synthetic images; returns its id."""
        from MedAIExtension.review.workflow import start_reader_session

        return start_reader_session(self.project, reviewer, per_class=perClass or None, seed=seed)

    def unfinishedSession(self, reviewer: str) -> int | None:
        """The reader's newest session that still has unanswered trials (to resume), or None."""
        sessions = [s for s in self.project.reader_sessions(reviewer) if not s.complete]
        return sessions[-1].id if sessions else None

    def sessionProgress(self, sessionId: int) -> tuple[int, int]:
        """(answered, total) trials of a session."""
        trials = self.project.reader_trials(sessionId)
        return sum(1 for t in trials if t.answered), len(trials)

    def loadTrial(self, sessionId: int) -> tuple[Any | None, Any | None]:
        """Load the session's first unanswered trial as a blinded volume named "Case N" (see the module docstring),
        replacing the previous case and removing the graded pair.

        Returns:
            (trial, volume node), or (None, None) when the session is complete.
        """
        from MedAIExtension.io.image import Image
        from MedAIExtension.io.loader import load_image
        from MedAIExtension.mrml import image_to_volume_node
        from MedAIExtension.review.blinded_export import HU_RANGE, common_grid, resample_onto_grid

        trial = self.project.next_trial(sessionId)
        self._removeCase()
        self._removePair()  # the graded pair would sit beside the case, named
        if trial is None:
            return None, None
        grid = common_grid([self.project.image(t.image_id) for t in self.project.reader_trials(sessionId)])
        image = load_image(self.project.image(trial.image_id).path)
        wide = image.array.size > 0 and float(np.ptp(image.array)) > BLINDED_ROUNDING_RANGE
        outside = float(HU_RANGE[0]) if wide or not image.array.size else float(np.min(image.array))
        voxels = resample_onto_grid(image, grid, outside)
        if wide:  # CT HU: whole numbers in the export's range, as the blinded files hold
            voxels = np.clip(np.rint(voxels), *HU_RANGE).astype(np.float32)
        affine = np.diag([-grid.spacing[0], -grid.spacing[1], grid.spacing[2], 1.0])  # LPS axes in RAS
        affine[:3, 3] = -affine[:3, :3] @ ((np.array(grid.size, dtype=float) - 1.0) / 2.0)
        node = image_to_volume_node(self.scene, Image(array=voxels, ijk_to_ras=affine), f"Case {trial.index + 1}")
        for name in list(node.GetAttributeNames() or ()):
            node.RemoveAttribute(name)
        node.SetDescription("")
        self._caseNode = node
        return trial, node

    def _removeCase(self) -> None:
        if self._caseNode is not None and self._caseNode.GetScene() is self.scene:
            self.scene.RemoveNode(self._caseNode)
        self._caseNode = None

    def answerTrial(
        self, sessionId: int, index: int, saidSynthetic: bool, confidence: int | None, seconds: float | None = None
    ) -> Any:
        """Record the reader's answer (final, committed before this returns)."""
        return self.project.answer_trial(sessionId, index, saidSynthetic, confidence, seconds)

    # ---- slice views -----------------------------------------------------------------------------------------------
    def showInViews(self, volumes: dict[str, Any], arrangement: int | None = None) -> int:
        """Show one volume per slice view, by view name (``{"Red": synthetic, "Yellow": reference}``; None empties
        a view), axial, with the views linked when there are several (they pan, zoom and scroll together).

        Args:
            volumes: volume node (or None) by slice view name.
            arrangement: a ``vtkMRMLLayoutNode`` view arrangement to switch to (e.g. side by side), or None.

        Returns:
            The number of slice views changed (0 in a scene without views, as outside the Slicer application).
        """
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if arrangement is not None and layout is not None:
            layout.SetViewArrangement(int(arrangement))
        changed = 0
        for kind in ("vtkMRMLSliceCompositeNode", "vtkMRMLSliceNode"):
            for index in range(self.scene.GetNumberOfNodesByClass(kind)):
                node = self.scene.GetNthNodeByClass(index, kind)
                if node.GetLayoutName() not in volumes:
                    continue
                if kind == "vtkMRMLSliceNode":
                    node.SetOrientationToAxial()
                    continue
                volume = volumes[node.GetLayoutName()]
                node.SetBackgroundVolumeID(volume.GetID() if volume is not None else None)
                node.SetForegroundVolumeID(None)
                node.SetLinkedControl(len(volumes) > 1)
                changed += 1
        return changed

    # ---- metrics, memorization, reader-study statistics, export --------------------------------------------------
    def runMetrics(self, progress: ProgressArg = None, token: CancelToken | None = None) -> dict[str, Any]:
        """Compute and store the realism and diversity metrics (minutes for large sets)."""
        from MedAIExtension.review.workflow import run_metrics

        return run_metrics(self.project, progress, token)

    def runMemorization(
        self, threshold: float | None = None, progress: ProgressArg = None, token: CancelToken | None = None
    ) -> dict[str, Any]:
        """Run and store the memorization check (nearest real image of every synthetic image)."""
        from MedAIExtension.review.workflow import run_memorization

        return run_memorization(self.project, threshold, progress, token)

    def readerStudy(self) -> dict[str, Any]:
        """Compute and store the reader-study statistics of every answered trial."""
        from MedAIExtension.review.workflow import reader_study_results

        return reader_study_results(self.project)

    def export(
        self,
        outputDir: str | os.PathLike[str],
        minReviewers: int = 1,
        excludeNearCopies: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> dict[str, Path]:
        """Write the accepted subset (CSV + JSON manifest) and the HTML review report; returns the files.

        ``warn`` receives a message for each accepted near-copy of a real image (and when the memorization check is
        missing or older than the images); ``excludeNearCopies`` leaves the near-copies out of the manifest.
        """
        from MedAIExtension.review.workflow import export_review

        return export_review(
            self.project, outputDir, min_reviewers=minReviewers, exclude_near_copies=excludeNearCopies, warn=warn
        )

    def metricsText(self) -> str:
        """The latest stored metrics as lines of text (a hint when none are stored)."""
        data = self.project.latest_result("metrics")
        if not data:
            return "Metrics not computed yet."
        from MedAIExtension.review.report import metric_rows

        lines = [f"Metrics ({data.get('n_synthetic')} synthetic vs {data.get('n_real')} real, {data.get('saved_at')})"]
        for name, value, reference, unit, direction in metric_rows(data):
            lines.append(f"  {name}: {value} (real vs real: {reference}; unit: {unit}; {direction})")
        lines += [f"  note: {note}" for note in data.get("notes", [])]
        return "\n".join(lines)

    def memorizationText(self) -> str:
        """The latest memorization check as text: how many near-copies, and which."""
        data = self.project.latest_result("memorization")
        if not data:
            return "Memorization check not run yet."
        flagged = data.get("flagged", [])
        lines = [
            f"Memorization: {len(flagged)} of {len(data.get('matches', []))} synthetic images flagged as near-copies"
        ]
        for row in data.get("matches", []):
            mark = "FLAGGED" if row.get("flagged") else "ok"
            lines.append(
                f"  synthetic {row.get('synthetic_id')} ~ real {row.get('real_id', '?')}: "
                f"similarity {_number(row.get('similarity'))} ({mark})"
            )
        return "\n".join(lines)

    def readerStudyText(self, compute: bool = True) -> str:
        """Reader-study statistics as text (recomputed from the answers when ``compute``, else the stored ones)."""
        data = self.readerStudy() if compute else self.project.latest_result("reader_study")
        if not data:
            return "No reader-study answers yet."
        lines = []
        for name, stats in [("all readers", data["pooled"]), *sorted(data.get("readers", {}).items())]:
            lines.append(
                f"{name}: {stats['n']} answers, accuracy {stats['accuracy']:.3f} "
                f"(95% CI {stats['ci_low']:.2f}-{stats['ci_high']:.2f}), p(>50%) {stats['p_greater']:.3g}, "
                f"sensitivity {_number(stats.get('sensitivity'))}, specificity {_number(stats.get('specificity'))}, "
                f"ROC AUC {_number(stats.get('auc'))}"
            )
        lines.append(str(data["pooled"].get("verdict", "")))
        if "agreement" in data:
            lines.append(f"Fleiss' kappa: {_number(data['agreement'].get('fleiss_kappa'))}")
        return "\n".join(lines)
