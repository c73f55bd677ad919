"""Colours, fonts and the shared chart layout, so every chart and page reads as one product.

Kept in one place because the figures, the tables and the CSS in ``assets/`` must agree: the red of
an alert marker on a chart is the red of the open-alert count in the runs table.
"""

from __future__ import annotations

from typing import Any

FONT = "Inter, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#e8ebf0"
AXIS = "#c5ccd6"
PAPER = "#ffffff"

#: The ratio distribution: one hue, darker towards the median.
FAN = "#2563eb"
FAN_MEDIAN = "#1e3a8a"
FAN_BAND_ALPHA = {"p1-p99": 0.10, "p5-p95": 0.18, "p25-p75": 0.30}
CLIP_LINE = "#475569"

#: Distinct, colour-blind friendly line colours (Okabe-Ito, reordered for white backgrounds).
LINES = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")

SEVERITY = {"critical": "#dc2626", "warning": "#d97706"}
RESOLVED = "#94a3b8"

CHART_HEIGHT = 250
FAN_HEIGHT = 340


def rgba(hex_colour: str, alpha: float) -> str:
    """``#2563eb`` with ``alpha`` as a CSS ``rgba()`` string: plotly fills need the alpha inline."""
    value = hex_colour.lstrip("#")
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha:g})"


def alert_colour(severity: str, state: str) -> str:
    """Firing alerts in their severity's colour; resolved ones grey, so live ones stand out."""
    if state != "firing":
        return RESOLVED
    return SEVERITY.get(severity, SEVERITY["warning"])


def base_layout(height: int) -> dict[str, Any]:
    """The layout every chart starts from: white, thin grid, legend on top, x the step."""
    axis = {
        "gridcolor": GRID,
        "linecolor": AXIS,
        "zeroline": False,
        "ticks": "outside",
        "tickcolor": AXIS,
        "ticklen": 4,
        "tickfont": {"size": 11, "color": MUTED},
        "title": {"font": {"size": 11, "color": MUTED}},
        "showline": True,
    }
    return {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 60, "r": 18, "t": 34, "b": 42},
        "paper_bgcolor": PAPER,
        "plot_bgcolor": PAPER,
        "font": {"family": FONT, "size": 12, "color": INK},
        "hovermode": "x unified",
        "hoverlabel": {"font": {"family": FONT, "size": 11}},
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 1.0,
            "yanchor": "bottom",
            "font": {"size": 11, "color": MUTED},
            "bgcolor": "rgba(0,0,0,0)",
        },
        "xaxis": {**axis, "title": {**axis["title"], "text": "step"}, "showspikes": False},
        "yaxis": dict(axis),
    }
