"""An explanation result: its map as a heat overlay over the study, with an opacity slider, a colour bar and the
sanity checks in words; for an uncertainty map also the per-segment uncertainty table.

The result folder is loaded as the Slicer module loads it (:func:`~MedAIExtension.explain.scene.
load_explanation_into_scene`): the map becomes the slice views' foreground layer with the result's window,
threshold (below it the CT shows through) and colour table, and an uncertainty result's segmentation is drawn too.
The slice views open on the axial slice through the map's peak.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from MedAIExtension.explain.scene import load_explanation_into_scene
from MedAIExtension.mrml.volumes import volume_node_to_image
from MedAIExtension.view.panel_host import PanelHost
from MedAIExtension.view.template_text import safe_text

__all__ = ["HeatmapPanel", "colour_bar_css", "sanity_lines"]

#: How many colours of the colour table the bar's CSS gradient samples.
_BAR_STOPS = 11
#: The per-segment uncertainty table (narrow, for the drawer): column title -> (segment key, hover text).
_UNCERTAINTY_COLUMNS = {
    "Segment": ("name", "the model's segment"),
    "mL": ("volume_ml", "segment volume in millilitres"),
    "Mean": ("mean_entropy", "mean uncertainty over the segment"),
    "P95": ("p95_entropy", "95th percentile of the uncertainty over the segment"),
}
#: The RAS axis a slice view of each orientation pages along (its slice offset).
_ORIENTATION_AXES = {"Sagittal": 0, "Coronal": 1, "Axial": 2}


def colour_bar_css(color_node: Any, stops: int = _BAR_STOPS) -> str:
    """A CSS ``linear-gradient`` (left: the window's low end, right: its high end) sampled from a Slicer colour node
    as the slice views map values through it."""
    colours = color_node.GetScalarsToColors()
    low, high = colours.GetRange()
    parts = []
    for index in range(stops):
        where = index / (stops - 1)
        rgb = [0.0, 0.0, 0.0]
        colours.GetColor(low + where * (high - low), rgb)
        red, green, blue = (round(255 * min(1.0, max(0.0, c))) for c in rgb)
        parts.append(f"rgb({red},{green},{blue}) {100 * where:.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def sanity_lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The sanity checks of an explanation as (headline verdict, explanation in words) pairs; for a map without
    checks (uncertainty) one pair saying so, with the writer's note on why."""
    sanity = document.get("sanity") or {}
    lines: list[tuple[str, str]] = []
    randomisation = sanity.get("randomisation")
    if isinstance(randomisation, dict):
        verdict = str(randomisation.get("verdict") or ("passed" if randomisation.get("passed") else "failed"))
        lines.append((f"Model randomisation test: {verdict}", str(randomisation.get("summary") or "")))
    faithfulness = sanity.get("faithfulness")
    if isinstance(faithfulness, dict):
        verdict = "faithful" if faithfulness.get("faithful") else "not shown to be faithful"
        lines.append((f"Faithfulness (deletion/insertion): {verdict}", str(faithfulness.get("summary") or "")))
    if not lines:
        why = " ".join(str(note) for note in document.get("notes") or [] if "sanity" in str(note).lower())
        lines.append(("No sanity checks were run for this map.", why))
    return lines


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else ""
    return str(value)


class HeatmapPanel:
    """Loads ``app.view.explanation`` into the scene and offers, in the drawer, the map's opacity (state
    ``heatmap_opacity``, the slice views' foreground opacity), its colour bar (class ``medai-colour-bar``), the
    sanity verdicts (class ``medai-sanity``) and, for uncertainty, the per-segment table (``medai-uncertainty``)."""

    def __init__(self, app: PanelHost) -> None:
        self.app = app
        assert app.view.explanation is not None
        self.nodes = load_explanation_into_scene(app.scene, app.view.explanation, app.volume_node)
        document = self.nodes.document
        self.document = document
        display_node = self.nodes.map.GetDisplayNode()
        self.window = (float(display_node.GetWindowLevelMin()), float(display_node.GetWindowLevelMax()))
        self.threshold = float(display_node.GetLowerThreshold())
        self.opacity = float((document.get("display") or {}).get("opacity", 0.5))
        unit = str((document.get("display") or {}).get("unit") or "")
        measure = str((document.get("uncertainty") or {}).get("measure") or "")
        self.unit = unit if unit not in ("", "1") else measure  # "1": a dimensionless measure, named instead
        self.bar_css = colour_bar_css(display_node.GetColorNode())
        method = str(document.get("method_title") or document["method"])
        target = (document.get("target") or {}).get("name")
        self.title = f"{method} over all labels" if document["method"] == "uncertainty" else f"{method} of {target}"
        self.segments = [dict(s) for s in (document.get("uncertainty") or {}).get("segments", [])]
        image = volume_node_to_image(self.nodes.map)
        values = np.nan_to_num(image.array.astype(np.float64), nan=-np.inf)
        k, j, i = np.unravel_index(int(np.argmax(values)), values.shape)
        self.peak_ras = (image.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]

    def _on_opacity(self, heatmap_opacity: float = 0.5, **_: Any) -> None:
        for view in self.app.slicer_app.view_manager.get_slice_views():
            view.set_foreground_opacity(float(heatmap_opacity))

    def after_layout(self) -> None:
        """Once the layout's slice views exist: the map as their foreground at its opacity, on the peak's slice
        (again when the server is ready: the app resets the views after its panels' ``after_layout``)."""
        for view in self.app.slicer_app.view_manager.get_slice_views():
            view.set_foreground_volume_id(self.nodes.map.GetID())
        self._on_opacity(heatmap_opacity=self.opacity)
        self.show_peak()
        self.app.server.controller.on_server_ready.add(self.show_peak)

    def show_peak(self, **_: Any) -> None:
        """Page each slice view to the slice through the map's peak."""
        for view in self.app.slicer_app.view_manager.get_slice_views():
            axis = _ORIENTATION_AXES.get(view.get_orientation())
            if axis is not None:
                view.set_slice_value(float(self.peak_ras[axis]))

    def build(self, v3: Any) -> None:
        """The drawer's heat-map controls (bound to the server state) and the result's facts."""
        from trame.widgets import html  # lazy: trame is the optional view dependency (requirements-view.txt)

        state = self.app.server.state
        state.heatmap_opacity = self.opacity
        state.change("heatmap_opacity")(self._on_opacity)
        score = self.document.get("score")
        v3.VListSubheader(safe_text(self.title) + (f" — score {score:.2f}" if isinstance(score, float) else ""))
        v3.VSlider(
            v_model=("heatmap_opacity",),
            label="Heat map opacity",
            min=0.0,
            max=1.0,
            step=0.05,
            hide_details=True,
            classes="medai-heatmap-opacity mx-2",
        )
        with html.Div(classes="medai-colour-bar mx-4 my-2"):
            html.Div(style=f"height: 14px; border: 1px solid #888; background: {self.bar_css}")
            with html.Div(style="display: flex; justify-content: space-between; font-size: 12px"):
                html.Span(_number(self.window[0]), classes="medai-colour-bar-min")
                html.Span(_number(self.window[1]), classes="medai-colour-bar-max")
            html.Div(safe_text(self.unit), classes="medai-colour-bar-unit", style="font-size: 12px; text-align: center")
            html.Div(f"Below {_number(self.threshold)} not shown.", style="font-size: 12px; color: #666")
        v3.VListSubheader("Sanity checks")
        with html.Div(classes="medai-sanity mx-4", style="font-size: 13px"):
            for headline, words in sanity_lines(self.document):
                html.Div(safe_text(headline), style="font-weight: bold")
                html.P(safe_text(words))
        if self.segments:
            self._build_uncertainty_table(v3, html)

    def _build_uncertainty_table(self, v3: Any, html: Any) -> None:
        v3.VListSubheader("Uncertainty per segment")
        with v3.VTable(density="compact", classes="medai-uncertainty"):
            with html.Thead(), html.Tr():
                for title, (_, hover) in _UNCERTAINTY_COLUMNS.items():
                    html.Th(title, title=hover)
            with html.Tbody():
                for index, segment in enumerate(self.segments):
                    with html.Tr(classes=f"medai-uncertainty-{index}"):
                        for key, _ in _UNCERTAINTY_COLUMNS.values():
                            html.Td(_number(segment.get(key)))
