"""Altair charts for the app: readings as a line, one marker layer per algorithm on the exact
readings it flagged, threshold rules as lines, the initializing stretch shaded; and the charts of
the Compare view (agreement matrix, disagreement timeline, replay).

Frames come in with stored (UTC) times; every chart draws them on the operator's clock
(lib.page.clock) with 24-hour labels, and its tooltips give the time there and in UTC.
"""

from __future__ import annotations

import math
from typing import Mapping

import altair as alt
import pandas as pd

from lib.page.clock import Clock

UTC_CLOCK = Clock.from_setting("UTC")
#: Vega's labels per tick size; its defaults use a 12-hour clock without AM/PM ("01:51" for 13:51)
TIME_FORMATS = {
    "milliseconds": "%H:%M:%S.%L",
    "seconds": "%H:%M:%S",
    "minutes": "%H:%M",
    "hours": "%H:%M",
    "day": "%a %d %b",
    "date": "%a %d %b",
    "week": "%d %b",
    "month": "%b %Y",
    "quarter": "%b %Y",
    "year": "%Y",
}
TIP_FORMAT = "%Y-%m-%d %H:%M:%S.%L"

INITIALIZING_COLOUR = "#9e9e9e"
LINE_COLOUR = "#1f77b4"
RULE_COLOUR = "#d62728"
BREAK_COLOUR = "#7f7f7f"
EXPECTED_COLOUR = "#2ca02c"
EVENT_COLOURS = {"info": "#8c8c8c", "warning": "#ff7f0e", "critical": "#d62728"}  # by severity
# One marker per algorithm: its own shape and colour (Okabe and Ito's colour-blind-safe palette,
# without its blues, which the line uses), and its own size, largest first, drawn opaque and
# outlined in white one on top of the other: a reading flagged by several shows each marker
# nested in the previous one instead of a blend of their colours.
SHAPES = ["circle", "diamond", "triangle-up", "square", "cross", "triangle-down", "wedge"]
PALETTE = ["#E69F00", "#009E73", "#D55E00", "#CC79A7", "#F0E442", "#56B4E9", "#999999"]
SIZES = [260, 150, 80, 40, 20]
ALL_AGREE = "all agree"
ALL_AGREE_COLOUR = "#000000"


def detector_style(names) -> dict[str, tuple[str, str, int]]:
    """{algorithm: (colour, shape, size)}, by name order: the same algorithm looks the same on
    every chart when every chart is given the same names."""
    return {
        name: (PALETTE[i % len(PALETTE)], SHAPES[i % len(SHAPES)], SIZES[min(i, len(SIZES) - 1)])
        for i, name in enumerate(sorted(set(names)))
    }


def marker_layers(marks: pd.DataFrame, clock: Clock, detectors=(), agree_among=()) -> list[alt.Chart]:
    """The flagged readings (`marks`: ts, value, detector, score, flagged_by), a marker per
    algorithm (`detector_style` over `detectors`, or those in `marks`), and a black ring around the
    readings every algorithm of `agree_among` flagged ("all agree", shown when there are two or more)."""
    style = detector_style(list(detectors) + list(marks["detector"].unique()))
    agree = sorted(set(agree_among))
    names = list(style) + ([ALL_AGREE] if len(agree) > 1 else [])
    colours = alt.Scale(
        domain=names, range=[style[n][0] for n in style] + [ALL_AGREE_COLOUR] * (len(names) > len(style))
    )
    shapes = alt.Scale(domain=names, range=[style[n][1] for n in style] + ["circle"] * (len(names) > len(style)))
    shown = marks.assign(
        size=marks["detector"].map(lambda d: style[d][2]), rank=marks["detector"].map(list(style).index)
    )
    shown, offset = on_clock(shown, clock)
    chart, tip = time_tips(alt.Chart(shown), clock, offset)
    tip += [alt.Tooltip("value:Q"), alt.Tooltip("detector:N", title="flagged by"), alt.Tooltip("score:Q", format=".3f")]
    if "flagged_by" in shown:
        tip.append(alt.Tooltip("flagged_by:N", title="all that flagged it"))
    legend = alt.Legend(title="flagged by", symbolSize=110, symbolStrokeWidth=1.5)
    layers = [
        chart.mark_point(filled=True, opacity=1.0, stroke="white", strokeWidth=1).encode(
            x="ts:T",
            y="value:Q",
            color=alt.Color("detector:N", scale=colours, legend=legend),
            shape=alt.Shape("detector:N", scale=shapes, legend=legend),
            size=alt.Size("size:Q", scale=None, legend=None),
            order=alt.Order("rank:Q", sort="ascending"),
            tooltip=tip,
        )
    ]
    if len(agree) > 1 and "flagged_by" in shown:
        everyone = shown[shown["flagged_by"].map(lambda f: set(agree) <= set(f.split(", ")))]
        everyone = everyone.drop_duplicates(["session_id", "seq"]).assign(detector=ALL_AGREE)
        if not everyone.empty:
            ring, ring_tip = time_tips(alt.Chart(everyone), clock, offset)
            layers.append(
                ring.mark_point(filled=False, size=SIZES[0] * 2.2, strokeWidth=2, opacity=1.0).encode(
                    x="ts:T",
                    y="value:Q",
                    color=alt.Color("detector:N", scale=colours, legend=legend),
                    shape=alt.Shape("detector:N", scale=shapes, legend=legend),
                    tooltip=[*ring_tip, alt.Tooltip("value:Q"), alt.Tooltip("flagged_by:N", title="flagged by all of")],
                )
            )
    return layers


def time_x(clock: Clock, field: str = "ts", title: str | None = None) -> alt.X:
    """The time axis: the operator's wall clock on a UTC scale (see `on_clock`), 24-hour labels."""
    return alt.X(
        f"{field}:T",
        title=title or f"time ({clock.name})",
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format=TIME_FORMATS),
    )


def on_clock(df: pd.DataFrame, clock: Clock, columns: tuple[str, ...] = ("ts",)) -> tuple[pd.DataFrame, str]:
    """A copy of `df` with its stored UTC time `columns` on the operator's wall clock, marked UTC
    so the browser's own zone does not move them; and the Vega expression of the first column's
    offset from UTC in ms (a constant, or a column `offset_ms` when a DST change falls inside)."""
    out = df.copy()
    offset = "0"
    for i, col in enumerate(columns):
        utc = pd.to_datetime(out[col])
        if i == 0 and len(out):
            per_row = clock.offset_ms(utc)
            if per_row.nunique() == 1:
                offset = str(int(per_row.iloc[0]))
            else:
                out["offset_ms"], offset = per_row, "datum.offset_ms"
        out[col] = clock.for_chart(utc)
    return out, offset


def time_tips(
    chart: alt.Chart, clock: Clock, offset: str, field: str = "ts", fmt: str = TIP_FORMAT, title: str = "time"
) -> tuple[alt.Chart, list[alt.Tooltip]]:
    """`chart` with the tooltip texts of `field`: the operator's time, and UTC beside it."""
    chart = chart.transform_calculate(**{f"{field}_local": f"utcFormat(time(datum.{field}), '{fmt}')"})
    tips = [alt.Tooltip(f"{field}_local:N", title=f"{title} ({clock.name})")]
    if clock.name != "UTC":
        chart = chart.transform_calculate(**{f"{field}_utc": f"utcFormat(time(datum.{field}) - {offset}, '{fmt}')"})
        tips.append(alt.Tooltip(f"{field}_utc:N", title=f"{title} (UTC)"))
    return chart, tips


def live_chart(
    readings: pd.DataFrame,
    marks: pd.DataFrame,
    init_spans: pd.DataFrame | None = None,
    limits: Mapping[str, float] | None = None,
    height: int = 260,
    event_spans: pd.DataFrame | None = None,
    clock: Clock = UTC_CLOCK,
    breaks: pd.DataFrame | None = None,
    unit: str = "",
    expected: tuple[float | None, float | None] = (None, None),
    detectors=(),
    agree_among=(),
) -> alt.LayerChart:
    """Value over time (`readings`: ts, value, and `run` when it is cut into runs: one line each,
    lib.page.runs), the `breaks` between runs marked (a grey band, a dashed rule where a new
    session starts), a marker on each reading an algorithm flagged
    (`marks`: ts, value, detector, score, flagged_by; colour and shape per algorithm), the stretch
    where detectors were initializing shaded grey, and threshold rules (`limits`: min/max) as
    dashed lines. `event_spans` (start, end, severity, event_id): anomaly events shaded in their
    severity's colour. Times on `clock`; values in `unit`, with the operator's `expected` range
    (min, max; `[sensors.<name>]`) as a green band (or a line when only one end is given). Markers:
    `marker_layers` (`detectors`: every algorithm's name, so that each looks the same on every
    chart; `agree_among`: the sensor's detectors, for "all agree")."""
    layers = expected_layers(*expected)
    if event_spans is not None and not event_spans.empty:
        events, offset = on_clock(event_spans, clock, ("start", "end"))
        chart, start_tips = time_tips(alt.Chart(events), clock, offset, "start", "%H:%M:%S", "from")
        chart, end_tips = time_tips(chart, clock, offset, "end", "%H:%M:%S", "to")
        # A fixed colour per severity rather than a colour scale: a scale would be shared with the
        # markers' "flagged by" scale and mix the two legends.
        for severity, colour in EVENT_COLOURS.items():
            layers.append(
                chart.transform_filter(alt.datum.severity == severity)
                .mark_rect(opacity=0.15, color=colour)
                .encode(
                    x=time_x(clock, "start"),
                    x2="end:T",
                    tooltip=[
                        alt.Tooltip("event_id:N", title="event"),
                        alt.Tooltip("severity:N"),
                        *start_tips,
                        *end_tips,
                    ],
                )
            )
    if init_spans is not None and not init_spans.empty:
        spans = init_spans.groupby("session_id", as_index=False).agg(start=("start", "min"), end=("end", "max"))
        spans["what"] = "initializing"
        spans, offset = on_clock(spans, clock, ("start", "end"))
        chart, start_tips = time_tips(alt.Chart(spans), clock, offset, "start", "%H:%M:%S", "from")
        chart, end_tips = time_tips(chart, clock, offset, "end", "%H:%M:%S", "to")
        layers.append(
            chart.mark_rect(color=INITIALIZING_COLOUR, opacity=0.18).encode(
                x=time_x(clock, "start"),
                x2="end:T",
                tooltip=[alt.Tooltip("what:N", title="detectors"), *start_tips, *end_tips],
            )
        )
    if breaks is not None and not breaks.empty:
        layers.extend(break_layers(breaks, clock))
    readings, offset = on_clock(readings, clock)
    chart, tips = time_tips(alt.Chart(readings), clock, offset)
    layers.append(
        chart.mark_line(color=LINE_COLOUR, strokeWidth=1.2).encode(
            x=time_x(clock),
            y=alt.Y("value:Q", title=unit or "value", scale=alt.Scale(zero=False)),
            detail="run:N" if "run" in readings else alt.Undefined,
            tooltip=[*tips, alt.Tooltip("value:Q", title=f"value ({unit})" if unit else "value")],
        )
    )
    for name, value in (limits or {}).items():
        if value is None or not math.isfinite(float(value)):
            continue
        rule = pd.DataFrame({"value": [float(value)], "rule": [f"rule {name} {value:g}"]})
        layers.append(
            alt.Chart(rule)
            .mark_rule(color=RULE_COLOUR, strokeDash=[6, 4], strokeWidth=1.5)
            .encode(y="value:Q", tooltip=[alt.Tooltip("rule:N", title="threshold")])
        )
    if marks is not None and not marks.empty:
        layers.extend(marker_layers(marks, clock, detectors, agree_among))
    return alt.layer(*layers).properties(height=height)


def expected_layers(low: float | None, high: float | None) -> list[alt.Chart]:
    """The operator's expected range of a sensor: a faint green band across the chart."""
    if low is None and high is None:
        return []
    text = (
        f"{low:g} to {high:g}"
        if low is not None and high is not None
        else (f"at least {low:g}" if low is not None else f"at most {high:g}")
    )
    tip = [alt.Tooltip("range:N", title="expected")]
    if low is not None and high is not None:
        band = pd.DataFrame({"low": [low], "high": [high], "range": [text]})
        return [
            alt.Chart(band).mark_rect(color=EXPECTED_COLOUR, opacity=0.10).encode(y="low:Q", y2="high:Q", tooltip=tip)
        ]
    edge = pd.DataFrame({"value": [low if low is not None else high], "range": [text]})
    return [
        alt.Chart(edge).mark_rule(color=EXPECTED_COLOUR, strokeWidth=1.5, opacity=0.6).encode(y="value:Q", tooltip=tip)
    ]


def break_layers(breaks: pd.DataFrame, clock: Clock) -> list[alt.Chart]:
    """Where a line is cut (lib.page.runs): a grey band over the time without readings, and a
    dashed rule where a new session starts."""
    shown, offset = on_clock(breaks, clock, ("start", "end"))
    chart, start_tips = time_tips(alt.Chart(shown), clock, offset, "start", TIP_FORMAT, "last reading")
    chart, end_tips = time_tips(chart, clock, offset, "end", TIP_FORMAT, "next reading")
    tips = [
        alt.Tooltip("what:N", title="line broken"),
        alt.Tooltip("seconds:Q", title="without readings (s)", format=",.1f"),
        *start_tips,
        *end_tips,
    ]
    band = chart.mark_rect(color=BREAK_COLOUR, opacity=0.12).encode(x=time_x(clock, "start"), x2="end:T", tooltip=tips)
    sessions = (
        chart.transform_filter("indexof(datum.what, 'new session') == 0")
        .mark_rule(color=BREAK_COLOUR, strokeDash=[3, 3], strokeWidth=1.5)
        .encode(x="end:T", tooltip=tips)
    )
    return [band, sessions]


NO_ANOMALY_COLOUR = "#e3f1e3"


def overview_strips(cells: pd.DataFrame, clock: Clock, order: list[str], bin_s: int) -> alt.Chart:
    """A strip per sensor (`order`: their labels, top to bottom) over time: a cell per bin with
    readings, light green without anomaly, red as more readings were flagged; blank where nothing
    was stored. `cells`: sensor (its label), cell (an id the page maps back), start (UTC),
    readings, flagged, detectors. A click selects a cell (`cell`)."""
    # sorted by a number: a label with a quote in it broke Vega's sort by a list of values
    rank = {label: i for i, label in enumerate(order)}
    cells = cells.assign(end=cells["start"] + pd.Timedelta(seconds=bin_s), rank=cells["sensor"].map(rank))
    shown, offset = on_clock(cells, clock, ("start", "end"))
    chart, start_tips = time_tips(alt.Chart(shown), clock, offset, "start", "%Y-%m-%d %H:%M", "from")
    chart, end_tips = time_tips(chart, clock, offset, "end", "%H:%M", "to")
    pick = alt.selection_point(name="cell", fields=["cell"], on="click", clear="dblclick")
    top = max(1, int(cells["flagged"].max() or 1))
    colour = alt.condition(
        "datum.flagged == 0",
        alt.value(NO_ANOMALY_COLOUR),
        alt.Color("flagged:Q", title="readings flagged", scale=alt.Scale(scheme="reds", domain=[0, top], domainMin=0)),
    )
    return (
        chart.mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=time_x(clock, "start"),
            x2="end:T",
            y=alt.Y(
                "sensor:N",
                title=None,
                sort=alt.EncodingSortField(field="rank", op="min"),
                axis=alt.Axis(labelLimit=220),
            ),
            color=colour,
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.55)),
            tooltip=[
                alt.Tooltip("sensor:N"),
                *start_tips,
                *end_tips,
                alt.Tooltip("readings:Q", format=","),
                alt.Tooltip("flagged:Q", title="readings flagged", format=","),
                alt.Tooltip("detectors:N", title="flagged by"),
            ],
        )
        .add_params(pick)
        .properties(height=alt.Step(26))
    )


def agreement_heatmap(matrix: pd.DataFrame, measure: str) -> alt.Chart:
    """Detector x detector matrix of an agreement measure, with the value written in each cell."""
    long = matrix.reset_index(names="a").melt(id_vars="a", var_name="b", value_name="v")
    base = alt.Chart(long).encode(x=alt.X("b:N", title=None), y=alt.Y("a:N", title=None))
    cells = base.mark_rect().encode(
        color=alt.Color(
            "v:Q", title=measure, scale=alt.Scale(domain=[-1 if measure == "kappa" else 0, 1], scheme="blues")
        ),
        tooltip=[
            alt.Tooltip("a:N", title="detector"),
            alt.Tooltip("b:N", title="vs"),
            alt.Tooltip("v:Q", title=measure, format=".3f"),
        ],
    )
    text = base.mark_text(fontSize=14).encode(
        text=alt.Text("v:Q", format=".2f"), color=alt.condition("datum.v > 0.6", alt.value("white"), alt.value("black"))
    )
    return (cells + text).properties(height=60 + 45 * len(matrix))


def disagreement_timeline(rows: pd.DataFrame, clock: Clock = UTC_CLOCK) -> alt.Chart:
    """One row per detector; a tick at each reading where the detectors disagree, filled where
    that detector flagged it."""
    n_detectors = rows["detector"].nunique()
    rows, offset = on_clock(rows, clock)
    chart, tips = time_tips(alt.Chart(rows), clock, offset)
    return (
        chart.mark_tick(thickness=2, size=18)
        .encode(
            x=time_x(clock),
            y=alt.Y("detector:N", title=None),
            color=alt.Color(
                "verdict:N", scale=alt.Scale(domain=["flagged", "not flagged"], range=["#d62728", "#c7c7c7"])
            ),
            tooltip=[*tips, "sensor:N", "session_id:N", "seq:Q", "detector:N", "verdict:N"],
        )
        .properties(height=40 + 35 * n_detectors)
    )


def replay_chart(rows: pd.DataFrame, clock: Clock = UTC_CLOCK, breaks: pd.DataFrame | None = None) -> alt.LayerChart:
    """A replayed series: the line (one per run, `breaks` marked between them, as on Live), what
    was flagged live and what the replay flags."""
    layers = break_layers(breaks, clock) if breaks is not None and not breaks.empty else []
    rows, offset = on_clock(rows, clock)
    layers.append(
        alt.Chart(rows)
        .mark_line(color=LINE_COLOUR, strokeWidth=1)
        .encode(
            x=time_x(clock),
            y=alt.Y("value:Q", scale=alt.Scale(zero=False)),
            detail="run:N" if "run" in rows else alt.Undefined,
        )
    )
    marks = pd.concat(
        [rows[rows["live"] == "anomaly"].assign(who="live"), rows[rows["replay"] == "anomaly"].assign(who="replay")]
    )
    if not marks.empty:
        chart, tips = time_tips(alt.Chart(marks), clock, offset)
        layers.append(
            chart.mark_point(size=90, filled=False, strokeWidth=2).encode(
                x="ts:T",
                y="value:Q",
                color=alt.Color(
                    "who:N", title="flagged", scale=alt.Scale(domain=["live", "replay"], range=["#ff7f0e", "#9467bd"])
                ),
                shape=alt.Shape("who:N", scale=alt.Scale(domain=["live", "replay"], range=["circle", "diamond"])),
                tooltip=[*tips, "value:Q", "who:N", "seq:Q"],
            )
        )
    return alt.layer(*layers).properties(height=260)


def rule_limits(config, sensor: str) -> dict[str, float]:
    """The min/max threshold rules that apply to `sensor`, for drawing as lines: lib.detect.rules'
    reading of `[detection.rules."*"]` then `[detection.rules.<sensor>]`. Other rules (rate of
    change, stuck value, silence) have no line to draw: their hits show as markers like any
    detector's ("rule:rate", ...)."""
    try:
        from lib.detect.rules import rules_for

        rules = rules_for(config, sensor)
        found = {"min": rules.min, "max": rules.max}
    except (ImportError, ValueError):
        # tolerant: the configuration's own tables, "*" first, then the sensor's
        found = {}
        for scope in ("*", sensor):
            table = config.detection.rules.get(scope) or {}
            if isinstance(table, Mapping):
                found.update({k: table[k] for k in ("min", "max") if k in table})
    return {
        k: float(v)
        for k, v in found.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
