"""Pure figure builders: plain series and alerts in, a plotly figure out; no database, no Dash.

Every builder accepts whatever subset of its metrics a run has logged (a run without advantages has
no ``clip_active``; a fresh run has nothing) and answers an empty-state figure rather than raising,
so a page can always render. Each chart also draws the alerts that concern it, on the step axis
shared by all charts, so a spike in one chart lines up with the alert that explains it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from ratiowatch_dashboard import theme

#: Quantile bands of the fan chart, outermost (lightest) first, as (label, lower, upper).
BANDS = (("p1-p99", "p1", "p99"), ("p5-p95", "p5", "p95"), ("p25-p75", "p25", "p75"))
TAILS = ("p0.1", "p99.9")
FAN_STATS = ("p0.1", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "p99.9")
ESS_STATS = ("ess", "seq_ess")
CLIP_STATS = ("clip_low", "clip_high", "clip_active")
KL_STATS = ("kl_k1", "kl_k2", "kl_k3")
GRAD_KEY = "grad/norm"
DEFAULT_CLIP = (0.2, 0.2)
EMPTY_MESSAGE = "no data yet"


@dataclass(frozen=True)
class Series:
    """One metric over steps; ``None`` marks a step whose value was NaN/Inf (a gap, not a zero)."""

    steps: Sequence[int]
    values: Sequence[float | None]


@dataclass(frozen=True)
class AlertMark:
    """What a chart needs to draw an alert: where it spans and what to say on hover."""

    rule: str
    metric: str
    severity: str
    state: str
    message: str
    step: int
    last_step: int


SeriesMap = Mapping[str, Series]


def chart_keys(family: str) -> list[str]:
    """Every metric key the run page's charts may draw for ``family``, for one batched read."""
    stats = (*FAN_STATS, *ESS_STATS, *CLIP_STATS, *KL_STATS)
    return [f"{family}/{stat}" for stat in stats] + [GRAD_KEY]


# Log axes labelled at 1-2-5 steps in plain numbers: plotly's own labels over less than a decade
# are bare digits ("2 3 5 7 9") that read as a linear scale.
_LOG_TICK_VALUES = [m * 10.0**e for e in range(-12, 13) for m in (1, 2, 5)]
LOG_TICKS = {
    "tickmode": "array",
    "tickvals": _LOG_TICK_VALUES,
    "ticktext": [f"{v:g}" for v in _LOG_TICK_VALUES],
}


def empty_figure(message: str = EMPTY_MESSAGE, height: int = theme.CHART_HEIGHT) -> go.Figure:
    """A blank chart with a centred note: what a page shows before a run has logged anything."""
    fig = go.Figure(layout=theme.base_layout(height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": 14, "color": theme.MUTED},
    )
    return fig


def fan_chart(
    family: str,
    series: SeriesMap,
    *,
    clip: tuple[float, float] = DEFAULT_CLIP,
    alerts: Iterable[AlertMark] = (),
) -> go.Figure:
    """Quantiles of the ``family`` ratio as nested bands around the median, on a log axis.

    A log axis makes r = 2 and r = 0.5 equally far from 1, as they are for the policy. The dashed
    lines are the PPO clip bounds 1 - eps_low and 1 + eps_high; every alert of the run is marked,
    since any of them may explain a change in the ratio distribution.
    """
    present = {stat: _points(series.get(f"{family}/{stat}"), positive=True) for stat in FAN_STATS}
    if not any(steps for steps, _ in present.values()):
        return empty_figure(height=theme.FAN_HEIGHT)
    fig = go.Figure(layout=theme.base_layout(theme.FAN_HEIGHT))
    for label, lower, upper in BANDS:
        _add_band(fig, label, present[lower], present[upper])
    for stat in TAILS:
        tails = " / ".join(TAILS)
        _add_line(
            fig,
            stat,
            present[stat],
            theme.FAN,
            width=1,
            name=tails,
            dash="dot",
            legend=stat == TAILS[0],
        )
    _add_line(fig, "p50", present["p50"], theme.FAN_MEDIAN, width=2, name="median")
    all_steps = [step for steps, _ in present.values() for step in steps]
    _add_clip_bounds(fig, clip, min(all_steps), max(all_steps))
    fig.update_yaxes(type="log", title_text=f"{family} ratio r (log)", **LOG_TICKS)
    _add_alerts(fig, alerts, relevant=lambda _alert: True)
    return fig


def ess_chart(family: str, series: SeriesMap, *, alerts: Iterable[AlertMark] = ()) -> go.Figure:
    """Kish effective sample size as a fraction of tokens (and of sequences): 1 is on-policy."""
    names = {"ess": "token ESS", "seq_ess": "sequence ESS"}
    fig = _lines_chart(family, ESS_STATS, series, names, alerts)
    fig.update_yaxes(range=[0, 1.05], title_text="ESS / n", tickformat=".0%")
    return fig


def clip_chart(family: str, series: SeriesMap, *, alerts: Iterable[AlertMark] = ()) -> go.Figure:
    """Fractions of tokens beyond each clip bound, and where the clipped branch is active."""
    names = {"clip_low": "r < 1-eps", "clip_high": "r > 1+eps", "clip_active": "clip active"}
    fig = _lines_chart(family, CLIP_STATS, series, names, alerts)
    fig.update_yaxes(rangemode="tozero", title_text="fraction of tokens", tickformat=".1%")
    return fig


def kl_chart(family: str, series: SeriesMap, *, alerts: Iterable[AlertMark] = ()) -> go.Figure:
    """Schulman's k1/k2/k3 KL estimators; k1 alone may go negative, so the axis is linear."""
    names = {"kl_k1": "k1", "kl_k2": "k2", "kl_k3": "k3"}
    fig = _lines_chart(family, KL_STATS, series, names, alerts)
    fig.update_yaxes(title_text="KL estimate", exponentformat="e", tickformat=".1e")
    return fig


def grad_chart(series: SeriesMap, *, alerts: Iterable[AlertMark] = ()) -> go.Figure:
    """Global gradient norm on a log axis, where a 100x spike stays visible next to calm steps."""
    steps, values = _points(series.get(GRAD_KEY), positive=True)
    if not steps:
        return empty_figure()
    fig = go.Figure(layout=theme.base_layout(theme.CHART_HEIGHT))
    _add_line(fig, GRAD_KEY, (steps, values), theme.LINES[0], width=1.5, name="grad norm")
    fig.update_yaxes(type="log", title_text="gradient norm (log)", **LOG_TICKS)
    _add_alerts(fig, alerts, relevant=lambda alert: alert.metric == GRAD_KEY)
    return fig


def _lines_chart(
    family: str,
    stats: Sequence[str],
    series: SeriesMap,
    names: Mapping[str, str],
    alerts: Iterable[AlertMark],
) -> go.Figure:
    """One line per present stat of ``family``, with the alerts raised on those metrics."""
    keys = {f"{family}/{stat}": stat for stat in stats}
    points = {stat: _points(series.get(key)) for key, stat in keys.items()}
    if not any(steps for steps, _ in points.values()):
        return empty_figure()
    fig = go.Figure(layout=theme.base_layout(theme.CHART_HEIGHT))
    for colour, stat in zip(theme.LINES, stats, strict=False):
        if points[stat][0]:
            _add_line(fig, stat, points[stat], colour, width=1.5, name=names[stat])
    _add_alerts(fig, alerts, relevant=lambda alert: alert.metric in keys)
    return fig


Points = tuple[list[int], list[float | None]]


def _points(series: Series | None, *, positive: bool = False) -> Points:
    """The series as lists, non-finite values as gaps; on a log axis non-positive values too."""
    if series is None:
        return [], []
    steps: list[int] = []
    values: list[float | None] = []
    for step, value in zip(series.steps, series.values, strict=True):
        ok = value is not None and math.isfinite(value) and (value > 0 or not positive)
        steps.append(int(step))
        values.append(float(value) if ok and value is not None else None)
    if all(value is None for value in values):
        return [], []
    return steps, values


def _add_line(
    fig: go.Figure,
    stat: str,
    points: Points,
    colour: str,
    *,
    width: float,
    name: str | None = None,
    dash: str = "solid",
    legend: bool = True,
) -> None:
    steps, values = points
    if not steps:
        return
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=values,
            mode="lines",
            name=name or stat,
            legendgroup=stat if name is None else name,
            showlegend=legend,
            line={"color": colour, "width": width, "dash": dash},
            hovertemplate=f"{stat} %{{y:.4g}}<extra></extra>",
        )
    )


def _add_band(fig: go.Figure, label: str, lower: Points, upper: Points) -> None:
    """A filled band between two quantiles, drawn as one closed polygon.

    The two quantiles are downsampled separately and may keep different steps, so the band is the
    lower curve forward and the upper curve backward, not two traces filled ``tonexty``.
    """
    low = [(s, v) for s, v in zip(*lower, strict=True) if v is not None]
    high = [(s, v) for s, v in zip(*upper, strict=True) if v is not None]
    if not low or not high:
        return
    outline = low + high[::-1]
    colour = theme.rgba(theme.FAN, theme.FAN_BAND_ALPHA[label])
    fig.add_trace(
        go.Scatter(
            x=[s for s, _ in outline],
            y=[v for _, v in outline],
            mode="lines",
            fill="toself",
            fillcolor=colour,
            line={"width": 0, "color": colour},
            name=label,
            hoverinfo="skip",
        )
    )
    for stat, (steps, values) in ((label.split("-")[0], lower), (label.split("-")[1], upper)):
        # Invisible edges: the unified hover then lists every quantile at the hovered step.
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=values,
                mode="lines",
                line={"width": 0.5, "color": theme.rgba(theme.FAN, 0.35)},
                showlegend=False,
                name=stat,
                hovertemplate=f"{stat} %{{y:.4g}}<extra></extra>",
            )
        )


def _add_clip_bounds(fig: go.Figure, clip: tuple[float, float], first: int, last: int) -> None:
    """Dashed lines at 1 - eps_low and 1 + eps_high across the logged steps.

    Drawn as a trace, not a layout shape, so it has a legend entry and the values are exact on the
    log axis (shape coordinates on log axes are easy to get wrong by a factor of log10).
    """
    eps_low, eps_high = clip
    low, high = 1.0 - eps_low, 1.0 + eps_high
    right = last if last > first else first + 1
    fig.add_trace(
        go.Scatter(
            x=[first, right, None, first, right],
            y=[low, low, None, high, high],
            mode="lines",
            name=f"clip bounds {low:g} / {high:g}",
            line={"color": theme.CLIP_LINE, "width": 1.2, "dash": "dash"},
            hoverinfo="skip",
        )
    )


def _add_alerts(
    fig: go.Figure, alerts: Iterable[AlertMark], relevant: Callable[[AlertMark], bool]
) -> None:
    """Shade each relevant alert's steps and put a hoverable marker above it.

    The markers live on a hidden overlay axis fixed to [0, 1], so they sit at the top of the plot
    whatever the data's scale (linear or log) and never change the data axis' autorange.
    """
    shown = [alert for alert in alerts if relevant(alert)]
    if not shown:
        return
    for alert in shown:
        colour = theme.alert_colour(alert.severity, alert.state)
        fig.add_vrect(
            x0=alert.step - 0.5,
            x1=alert.last_step + 0.5,
            fillcolor=theme.rgba(colour, 0.10),
            line={"color": colour, "width": 1},
            layer="below",
        )
    fig.add_trace(
        go.Scatter(
            x=[alert.step for alert in shown],
            y=[0.96] * len(shown),
            yaxis="y2",
            mode="markers",
            name="alerts",
            marker={
                "symbol": "triangle-down",
                "size": 11,
                "color": [theme.alert_colour(a.severity, a.state) for a in shown],
                "line": {"width": 1, "color": "#ffffff"},
            },
            customdata=[[a.rule, a.message, a.state, a.step, a.last_step] for a in shown],
            hovertemplate=(
                "<b>%{customdata[0]}</b> (%{customdata[2]})<br>%{customdata[1]}"
                "<br>steps %{customdata[3]}-%{customdata[4]}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        yaxis2={"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True}
    )
