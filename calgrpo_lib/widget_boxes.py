"""The box every widget of the notebooks is displayed in: a plain-text form that says what it is (not the widget
tree's repr) and, optionally, a static image of its starting state for renderers that cannot draw widgets (GitHub,
nbconvert's HTML, a notebook opened without a kernel). :func:`calgrpo_lib.viz.credit_browser` and
:func:`calgrpo_lib.advantage_plots.advantage_widget` return one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .validation import check_choice

__all__ = ["noted_box", "WIDGET_NOTE", "STATIC_CLASS"]

#: what a widget's output says where the widget cannot be drawn (before its cell runs in JupyterLab, on GitHub,
#: in nbconvert's HTML): the image displayed just before it shows the widget's starting state
WIDGET_NOTE = "(an interactive widget: run this cell in Jupyter to use it; the image above shows where it starts)"
#: the CSS class of a noted box that displays a static image of its starting state
STATIC_CLASS = "calgrpo-widget-static"
# Once such a box is drawn (JupyterLab, Notebook 7: the same output-area classes), the output just before its own,
# which is its static image, is hidden; where the widget is not drawn the rule matches nothing and the image stays.
_HIDE_STATIC = (f"<style>.jp-OutputArea-child:has(+ .jp-OutputArea-child .{STATIC_CLASS}) {{display: none;}}"
                "</style>")


def _display_noted(box: Any) -> None:
    """IPython's display hook of a noted box: its static image (when it has one), then the widget itself."""
    import base64

    from IPython.display import display

    if box.static_png is not None:
        display({"image/png": base64.b64encode(box.static_png).decode("ascii"),
                 "text/plain": "(the starting state of the widget below)"}, raw=True)
    display(box._repr_mimebundle_(), raw=True)


@functools.cache
def _noted(base: str) -> type:
    import ipywidgets as widgets

    return type(f"Noted{base}", (getattr(widgets, base),), {"__repr__": lambda self: WIDGET_NOTE, "static_png": None,
                                                            "_ipython_display_": _display_noted})


def noted_box(kind: str, children: Sequence[Any], *, static_png: bytes | memoryview | None = None,
              **kwargs: Any) -> Any:
    """An ``ipywidgets.HBox`` or ``VBox`` (``kind``) whose plain-text form is :data:`WIDGET_NOTE` instead of the
    widget tree's repr (``HBox(children=(VBox(children=(FloatSlider(...``), which is what a renderer without the
    widget shows.

    ``static_png``: a PNG of the widget's starting state. Displaying the box then displays that image first, as its
    own output, so GitHub, nbconvert's HTML and a notebook opened without a kernel show a picture where the widget
    is; once JupyterLab draws the widget, a style in its last child (a hidden ``ipywidgets.HTML``) hides the image.
    The box carries the CSS class :data:`STATIC_CLASS`.
    """
    import ipywidgets as widgets

    check_choice("kind", kind, ("HBox", "VBox"))
    if isinstance(static_png, bytearray | memoryview):  # an ipywidgets.Image's value is a memoryview
        static_png = bytes(static_png)
    if static_png is not None and not (isinstance(static_png, bytes) and static_png.startswith(b"\x89PNG")):
        raise ValueError(f"static_png is {type(static_png).__name__} {str(static_png)[:20]!r}; allowed: the bytes of a "
                         "PNG image (figure_png) or None")
    children = list(children)
    if static_png is not None:
        children.append(widgets.HTML(_HIDE_STATIC, layout=widgets.Layout(display="none")))
    box = _noted(kind)(children, **kwargs)
    box.static_png = static_png
    if static_png is not None:
        box.add_class(STATIC_CLASS)
    return box
