"""Text from files (segment names, nodule ids, sanity verdicts, folder names) put into the ``medai view`` page.

trame writes a widget's text and attribute values into the page's Vue template as they are: a value holding
``<tag>`` becomes markup, ``"`` ends the attribute, and ``{{ … }}`` is evaluated as JavaScript in the reviewer's
browser. Every value that came from a file or the command line goes through :func:`safe_text` first: HTML
special characters and the braces of Vue's interpolation become character references, which the template shows
as the characters themselves and never evaluates.
"""

from __future__ import annotations

from html import escape

__all__ = ["safe_text"]


def safe_text(value: object) -> str:
    """``value`` as text that a trame template shows literally (content or attribute value)."""
    return escape(str(value), quote=True).replace("{", "&#123;").replace("}", "&#125;")
