"""Text from files never becomes markup or code in the ``medai view`` page (trame writes it into a Vue template)."""

from __future__ import annotations

import html

import pytest

from MedAIExtension.view.template_text import safe_text

pytest.importorskip("trame")

HOSTILE = 'Lung" :class="x" {{ constructor.constructor("alert(1)")() }} <img src=x onerror=alert(2)>'


def test_safe_text_reads_back_as_the_same_characters() -> None:
    for value in (HOSTILE, "Lung lesion", "N1", "Ω 5 mm", 3):
        text = safe_text(value)
        assert "{" not in text and "}" not in text and "<" not in text and '"' not in text
        assert html.unescape(text) == str(value)


def test_a_hostile_name_in_a_trame_template_is_neither_markup_nor_an_expression() -> None:
    from trame.app import get_server
    from trame.widgets import html as trame_html
    from trame.widgets import vuetify3 as v3
    from trame_vuetify.ui.vuetify3 import SinglePageLayout

    server = get_server("medai-template-text-test", client_type="vue3")
    with SinglePageLayout(server):
        cell = trame_html.Td(safe_text(HOSTILE))
        switch = v3.VCheckbox(label=safe_text(HOSTILE), v_model=("x",))
    for rendered in (cell.html, switch.html):
        assert "{{" not in rendered and "<img" not in rendered and ':class="x"' not in rendered
    assert switch.html.count('"') == 4  # v-model="x" and label="…": the name did not end the attribute
