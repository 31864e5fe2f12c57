"""The reader's verdicts in ``medai view``: accept / reject / comment each finding and the whole study, export an SR.

Every click is stored at once in the result folder's decision store (:mod:`MedAIExtension.review.store.decisions`,
append-only SQLite, committed before the click returns), so a restarted server shows the same verdicts. "Export SR"
writes the current decisions as a DICOM Comprehensive SR referencing the AI result's SEG
(:func:`~MedAIExtension.view.decision_sr.write_decision_sr`) into ``<result>/review/decisions.dcm``.

The findings are the result's segments (segmentation) or nodules (tracking: the SR references the follow-up SEG).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.errors import MedAIError
from MedAIExtension.review.store.decisions import DecisionStore, result_reference
from MedAIExtension.view.decision_sr import SEG_FILE, write_decision_sr
from MedAIExtension.view.panel_host import PanelHost
from MedAIExtension.view.template_text import safe_text

__all__ = ["SR_NAME", "DecisionsPanel"]

#: The exported SR, relative to the result folder.
SR_NAME = Path("review") / "decisions.dcm"

_VERDICT_BUTTONS = (("accepted", "mdi-check", "green"), ("rejected", "mdi-close", "red"))


class DecisionsPanel:
    """Verdicts on ``findings`` (ids shown as they are) of the result in ``folder``, by ``reader``; the SR references
    the folder's DICOM SEG ``seg_name`` (a tracking result: the follow-up's SEG, whose segments are the nodules).
    ``after_export`` is called with the written SR (a gateway study: store it in the PACS) and says what it did.

    Server state: ``decision_<i>`` (the current verdict of finding ``i``, ``""`` when none), ``decision_study``,
    ``decision_comment`` (the comment field) and ``decision_message`` (the outcome of the last action).
    """

    def __init__(
        self,
        app: PanelHost,
        folder: Path,
        findings: list[str],
        reader: str,
        seg_name: str = SEG_FILE,
        after_export: Callable[[Path], str] | None = None,
    ) -> None:
        self.app = app
        self.after_export = after_export
        self.folder = folder
        self.findings = findings
        self.reader = reader
        self.seg_name = seg_name
        self.reference = result_reference(folder, seg_name)

    def _key(self, index: int | None) -> str:
        return "decision_study" if index is None else f"decision_{index}"

    def _refresh(self) -> None:
        state = self.app.server.state
        with DecisionStore.for_result(self.folder) as store:
            latest = store.latest(result_ref=self.reference)
        for index, finding in enumerate(self.findings):
            record = latest.get(("finding", finding))
            state[self._key(index)] = record.decision if record is not None else ""
        study = latest.get(("study", ""))
        state[self._key(None)] = study.decision if study is not None else ""

    def decide(self, index: int | None, decision: str) -> None:
        """Record ``decision`` on finding ``index`` (None: the study), with the comment field's text if any."""
        state = self.app.server.state
        comment = str(state.decision_comment or "").strip()
        finding = None if index is None else self.findings[int(index)]
        try:
            with DecisionStore.for_result(self.folder) as store:
                store.add(decision, self.reader, finding_id=finding, comment=comment, result_ref=self.reference)
        except MedAIError as exc:
            state.decision_message = str(exc)
            return
        state.decision_comment = ""
        state.decision_message = f"{finding or 'Study'}: {decision} by {self.reader}"
        self._refresh()

    def export(self) -> None:
        """Write the decisions SR (``<result>/review/decisions.dcm``)."""
        state = self.app.server.state
        try:
            with DecisionStore.for_result(self.folder) as store:
                path = write_decision_sr(
                    store, self.folder, self.folder / SR_NAME, author=self.reader, seg_name=self.seg_name
                )
        except MedAIError as exc:
            state.decision_message = str(exc)
            return
        message = f"Exported {path.name} into {path.parent}"
        if self.after_export is not None:
            try:
                message += f"; {self.after_export(path)}"
            except MedAIError as exc:
                message += f"; not stored in the PACS ({exc}). Export again to retry."
        state.decision_message = message

    def build(self, v3: Any) -> None:
        """The drawer's verdict rows (class ``medai-decision-<i>`` / ``medai-decision-study``), comment, export."""
        state = self.app.server.state
        state.decision_comment = ""
        state.decision_message = ""
        self._refresh()
        v3.VListSubheader(f"Decisions ({safe_text(self.reader)})")
        rows: list[tuple[int | None, str, str]] = [
            (i, name, f"medai-decision-{i}") for i, name in enumerate(self.findings)
        ]
        rows.append((None, "Whole study", "medai-decision-study"))
        for index, name, css in rows:
            with v3.VRow(classes=f"medai-decision {css} mx-2 my-0 align-center", dense=True):
                v3.VCol(safe_text(name), cols=4, classes="py-1")
                v3.VCol(f"{{{{ {self._key(index)} }}}}", cols=3, classes="py-1 medai-decision-state")
                with v3.VCol(cols=5, classes="py-1"):
                    for decision, icon, colour in (
                        ("accepted", "mdi-check", "green"),
                        ("rejected", "mdi-close", "red"),
                    ):
                        v3.VBtn(
                            icon=icon,
                            size="x-small",
                            color=colour,
                            variant="tonal",
                            classes=f"mr-1 medai-{decision}",
                            click=(self.decide, f"[{'null' if index is None else index}, '{decision}']"),
                        )
                    v3.VBtn(
                        icon="mdi-comment-outline",
                        size="x-small",
                        variant="tonal",
                        classes="medai-commented",
                        click=(self.decide, f"[{'null' if index is None else index}, 'commented']"),
                    )
        v3.VTextField(
            v_model=("decision_comment",),
            label="Comment (goes with the next verdict)",
            density="compact",
            hide_details=True,
            classes="mx-2 medai-comment",
        )
        v3.VBtn("Export SR", click=self.export, classes="ma-2 medai-export", size="small")
        v3.VCardText("{{ decision_message }}", classes="medai-decision-message text-caption")
