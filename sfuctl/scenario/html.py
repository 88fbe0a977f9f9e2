"""The `--html` output of `sfuctl run`: one self-contained page (inline CSS and SVG, no script, no link, no
URL) with the verdicts, the topologies side by side (when the call also ran as a mesh), plots of bitrate,
loss, jitter and RTT per room over time, the server's CPU and bitrate, and the join-time and first-frame
histograms; with load agents, their table and their machines' CPU. Thresholds are drawn on the plots of their
metric (a line at their value, a marker where they start counting), the worst streams are listed, and with
many rooms the worst stand out and the others fade."""

from __future__ import annotations

import datetime
import os
import platform
from html import escape

from .. import __version__
from ..agents.cpu import BUSY_WARNING
from ..bots.stats import room_sort_key
from .comparison import compare, comparison_caption, comparison_lines
from .junit import verdict_message
from .metrics import METRICS, Recorder
from .model import Scenario
from .runner import RunResult
from .svg import Band, Line, histogram, line_chart
from ..units import format_value

# Aggregates that are a level a plot can show as a line (not a count or a sum).
LEVEL_AGGREGATES = ("min", "max", "avg", "p50", "p90", "p95", "p99")
MANY_ROOMS = 6  # from this many rooms on, only the worst keep their colour in the plots
WORST_ROOMS = 3
WORST_STREAMS = 10

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 800px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff; font-weight: 600; }
.pass { background: #2e7d32; } .fail { background: #c62828; } .incomplete { background: #ef6c00; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #ddd; }
td:first-child { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { color: #c62828; font-weight: 600; }
.meta { color: #555; } .note { color: #555; font-size: 13px; }
svg.chart { display: block; margin: 8px 0 16px; }
svg .title { font-size: 13px; font-weight: 600; fill: #222; }
svg .tick, svg .legend { font-size: 11px; fill: #444; } svg .empty { font-size: 13px; fill: #999; }
svg .grid { stroke: #e6e6e6; } svg .frame { fill: none; stroke: #999; }
svg .marker { stroke: #888; stroke-dasharray: 2 3; } svg .band { fill: #fbe9e7; }
svg .bar { fill: #1f77b4; }
svg .limit { stroke: #c62828; stroke-dasharray: 6 3; } svg .limit-label { font-size: 10px; fill: #c62828; }
"""


def render_html(result: RunResult) -> str:
    """The whole report page."""
    scenario = result.scenario
    recorder = result.recorder
    body = [_header(result), _verdicts(result)]
    if recorder is not None and "mesh" in scenario.topologies:
        body.append(_topologies(scenario, recorder))
    if recorder is not None and recorder.t0 is not None:
        body.append(_charts(result, recorder))
    if result.report is not None:
        body.append(_bots(result))
    body.append(_worst_streams(result))
    if result.agents is not None:
        body.append(_agents(result))
    title = f"sfuctl run {scenario.name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _header(result: RunResult) -> str:
    scenario = result.scenario
    if not result.complete:
        badge = f'<span class="badge incomplete">{escape(result.status.upper())}</span>'
    elif result.failed_verdicts:
        badge = '<span class="badge fail">FAIL</span>'
    else:
        badge = '<span class="badge pass">PASS</span>'
    server = f"{result.server_url} ({'embedded' if result.embedded else 'given'})" if result.server_url else "none"
    stages = ", ".join(f"{s.bots} bots for {s.duration:g} s" for s in scenario.stages)
    started = datetime.datetime.fromtimestamp(result.started_at, datetime.timezone.utc)
    lines = [
        f"<h1>{escape(scenario.name)} {badge}</h1>",
        f'<p class="meta">{started:%Y-%m-%d %H:%M:%S} UTC · sfuctl {escape(__version__)} · '
        f"{escape(platform.node())} ({os.cpu_count()} cores)"
        + (f"<br><code>{escape(result.command)}</code>" if result.command else "") + "</p>",
        f'<p class="meta">{escape(scenario.description)}</p>' if scenario.description else "",
        f'<p class="meta">file {escape(str(scenario.path))} · server {escape(server)} · ran {result.duration_s:.1f} s · '
        f"stages: {escape(stages)} · {scenario.bots.rooms} room(s), ramp {scenario.bots.ramp:g}/s · "
        f"topology {escape(' + '.join(scenario.topologies))}</p>",
    ]
    if result.error:
        lines.append(f'<p class="badge fail">{escape(result.error)}</p>')
    if result.aborted_by:
        lines.append(f"<p>Aborted when <b>{escape(result.aborted_by)}</b> failed (abort_on_fail).</p>")
    if result.status == "interrupted":
        lines.append("<p>Interrupted before the end: the figures cover only the part that ran.</p>")
    for group in scenario.network:
        steps = "; ".join(
            f"from {step.at:g} s: loss {step.impairment.loss:.1%}, delay {step.impairment.delay_ms:g} ms, "
            f"jitter {step.impairment.jitter_ms:g} ms"
            + (f", {step.impairment.bandwidth_kbps:g} kb/s" if step.impairment.bandwidth_kbps else "")
            for step in group.timeline()
        )
        who = "bots" if group.role == "all" else group.role
        rooms = ", ".join(group.rooms) if group.rooms else "each room"
        lines.append(f'<p class="note">network group <b>{escape(group.name)}</b> ({group.share:.0%} of the '
                     f"{escape(who)} of {escape(rooms)}): {escape(steps)}</p>")
    return "\n".join(line for line in lines if line)


def _verdicts(result: RunResult) -> str:
    rows = []
    for verdict in result.verdicts:
        threshold = verdict.threshold
        value = "–" if verdict.value is None else format_value(verdict.value, threshold.metric.unit)
        css = "" if verdict.passed else ' class="failed"'
        rows.append(
            f"<tr{css}><td>{escape(threshold.key)}</td><td>{escape(threshold.expression.text.strip())}</td>"
            f'<td class="num">{threshold.after:g} s</td><td class="num">{escape(value)}</td>'
            f'<td class="num">{verdict.samples}</td><td>{"pass" if verdict.passed else "FAIL"}</td></tr>'
            + ("" if verdict.passed else
               f'<tr class="failed"><td colspan="6">{escape(verdict_message(verdict))}</td></tr>')
        )
    if not rows:
        rows.append('<tr><td colspan="6">no thresholds</td></tr>')
    return ("<h2>Thresholds</h2>\n<table><tr><th>metric</th><th>expression</th><th>after</th><th>measured</th>"
            "<th>samples</th><th>result</th></tr>\n" + "\n".join(rows) + "\n</table>")


def _topologies(scenario: Scenario, recorder: Recorder) -> str:
    rows = compare(scenario, recorder)
    head = "".join(f'<th class="num">{escape(row.topology)}</th>' for row in rows)
    lines = "\n".join(
        f"<tr><td>{escape(label)}</td>" + "".join(f'<td class="num">{escape(cell)}</td>' for cell in cells) + "</tr>"
        for label, cells in comparison_lines(rows)
    )
    return (f"<h2>Topologies (per peer)</h2>\n<table><tr><th></th>{head}</tr>\n{lines}\n</table>\n"
            f'<p class="note">{escape(comparison_caption(rows))}</p>')


def _charts(result: RunResult, recorder: Recorder) -> str:
    scenario = result.scenario
    x_max = scenario.duration
    rooms = sorted((r for r in recorder.rooms if r != "total"), key=room_sort_key)
    markers, start = [], 0.0
    for index, stage in enumerate(scenario.stages):
        if index:
            markers.append((start, f"stage {index + 1}: {stage.bots} bots"))
        start += stage.duration
    bands = [Band(w.start, w.end if w.end is not None else scenario.duration, f"network {g.name}")
             for g in scenario.network for w in g.windows]

    faded = _faded_rooms(recorder, rooms)

    def per_room(field: str) -> list[Line]:
        return [Line(room, [(p.t, getattr(p, field)) for p in recorder.rooms[room]], faded=room in faded)
                for room in rooms]

    def judged(*names: str) -> dict:
        """The markers and limit lines of the thresholds on these metrics."""
        limits, starts = _thresholds(scenario, names)
        return {"markers": [*markers, *starts], "limits": limits}

    loss = per_room("loss") + [
        Line(f"{room} before recovery", [(p.t, p.loss_before_recovery) for p in recorder.rooms[room]], dashed=True,
             color=index, legend=False, faded=room in faded)
        for index, room in enumerate(rooms)
    ]
    server = [Line("in", [(t, s["bitrate_in_bps"]) for t, s in recorder.server]),
              Line("out", [(t, s["bitrate_out_bps"]) for t, s in recorder.server])]
    charts = [
        "<h2>Over time, per room (the bots' view, each second)</h2>",
        line_chart("Received bitrate", "Mb/s", per_room("received_bps"), x_max, scale=1e-6, markers=markers,
                   bands=bands),
        line_chart("Loss after NACK recovery (solid) and before it (dashed), audio and video pooled", "%", loss,
                   x_max, scale=100, bands=bands,
                   **judged("consumer.fraction_lost", "consumer.fraction_lost_before_recovery")),
        line_chart("Jitter, mean over consumers", "ms", per_room("jitter_ms"), x_max, bands=bands,
                   **judged("consumer.jitter_ms")),
        line_chart("Round-trip time, mean over consumers", "ms", per_room("rtt_ms"), x_max, bands=bands,
                   **judged("consumer.rtt_ms")),
        line_chart("Bot processes' CPU per active bot", "% of a core", per_room("cpu_percent"), x_max, bands=bands,
                   **judged("bots.cpu_percent")),
        "<h2>Server (its stats stream, each second)</h2>",
        line_chart("Server CPU", "% of a core", [Line("cpu", [(t, s["cpu_percent"]) for t, s in recorder.server])],
                   x_max, bands=bands, **judged("server.cpu_percent")),
        line_chart("Server bitrate", "Mb/s", server, x_max, scale=1e-6, bands=bands,
                   **judged("server.bitrate_in_bps", "server.bitrate_out_bps")),
        "<h2>Joins and first frames</h2>",
        histogram("Join time", "ms", recorder.values(METRICS["bots.join_ms"], {})),
        histogram("First video frame", "ms", recorder.values(METRICS["consumer.first_frame_ms"], {"kind": "video"})),
    ]
    return "\n".join(charts)


def _thresholds(scenario: Scenario, names: tuple[str, ...]) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """(limit lines, start markers) of the thresholds on `names` whose aggregate is a level, not a count."""
    limits, starts = [], []
    for threshold in scenario.thresholds:
        if threshold.metric.name not in names or threshold.expression.aggregate not in LEVEL_AGGREGATES:
            continue
        limits.append((threshold.expression.value, f"{threshold.key}: {threshold.expression.text.strip()}"))
        if threshold.after:
            starts.append((threshold.after, f"{threshold.key} judged from {threshold.after:g} s"))
    return limits, starts


def _faded_rooms(recorder: Recorder, rooms: list[str]) -> set[str]:
    """With many rooms, all but the worst (highest peak loss, then jitter): they are drawn faded."""
    if len(rooms) < MANY_ROOMS:
        return set()

    def badness(room: str) -> tuple[float, float]:
        points = recorder.rooms[room]
        return (max((p.loss for p in points), default=0.0), max((p.jitter_ms or 0.0 for p in points), default=0.0))

    worst = sorted(rooms, key=badness, reverse=True)[:WORST_ROOMS]
    return set(rooms) - set(worst)


def _worst_streams(result: RunResult) -> str:
    """The streams that fared worst over the run (loss, then frozen time, then jitter), from their series."""
    if result.agents is not None:
        entries = result.agents.consumers
    elif result.recorder is not None:
        entries = result.recorder.consumer_entries(result.report.to_dict() if result.report is not None else None)
    else:
        return ""
    rows = []
    for entry in entries:
        series = entry["series"]
        losses = [v for v in series["fraction_lost"] if v is not None]
        jitters = [v for v in series["jitter_ms"] if v is not None]
        loss = sum(losses) / len(losses) if losses else 0.0
        rows.append((loss, sum(series.get("freeze_ms", [])), max(jitters, default=0.0), sum(series["freezes"]), entry))
    rows.sort(key=lambda row: row[:3], reverse=True)
    lines = [
        f"<tr><td>{escape(entry['bot'] or '?')}</td><td>{escape(entry['room'] or '?')}</td>"
        f"<td>{escape(entry['producer_name'] or '?')}</td><td>{escape(entry['kind'])}</td>"
        f'<td class="num">{loss * 100:.2f}</td><td class="num">{freezes}</td><td class="num">{frozen / 1000:.1f}</td>'
        f'<td class="num">{jitter:.1f}</td></tr>'
        for loss, frozen, jitter, freezes, entry in rows[:WORST_STREAMS]
    ]
    if not lines:
        return ""
    return (f"<h2>Worst streams (top {WORST_STREAMS} by loss, then frozen time, then jitter)</h2>\n"
            "<table><tr><th>bot</th><th>room</th><th>from</th><th>kind</th><th class=\"num\">loss % (mean)</th>"
            "<th class=\"num\">freezes</th><th class=\"num\">frozen s</th><th class=\"num\">jitter max ms</th></tr>\n"
            + "\n".join(lines) + "\n</table>")


def _bots(result: RunResult) -> str:
    report = result.report
    assert report is not None
    rows = []
    for row in [*report.rooms, report.total]:
        rows.append(
            f"<tr><td>{escape(row['room'])}</td><td class=\"num\">{row['joined']}/{row['bots']}</td>"
            f"<td class=\"num\">{row['failed']}</td><td class=\"num\">{row['streams_sent']}/{row['streams_received']}</td>"
            f"<td class=\"num\">{row['received_mean_bps'] / 1e6:.2f}</td>"
            f"<td class=\"num\">{row['received_peak_bps'] / 1e6:.2f}</td>"
            f"<td class=\"num\">{row['fraction_lost'] * 100:.2f} / {row['fraction_lost_before_recovery'] * 100:.2f}</td>"
            f"<td class=\"num\">{_ms(row['jitter_p95_ms'])}</td><td class=\"num\">{row['freezes']}</td>"
            f"<td class=\"num\">{_ms(row['join_p95_ms'])}</td></tr>"
        )
    failures = [f"<li>{escape(bot['name'])} ({escape(bot['room'])}): {escape(bot['error'] or '')}</li>"
                for bot in report.bots if bot["status"] == "failed"][:20]
    return (
        "<h2>Bots (whole run)</h2>\n<table><tr><th>room</th><th>joined</th><th>failed</th><th>streams tx/rx</th>"
        "<th>rx Mb/s mean</th><th>rx Mb/s peak (1 s)</th><th>loss % after / before</th><th>jitter p95 ms</th><th>freezes</th><th>join p95 ms</th></tr>\n"
        + "\n".join(rows) + "\n</table>"
        + (f"\n<h2>Failed joins</h2>\n<ul>{''.join(failures)}</ul>" if failures else "")
    )


def _agents(result: RunResult) -> str:
    """The load agents: bots, start skew, their machines' CPU (a generator over ~85% reports false loss)."""
    agents = result.agents
    assert agents is not None
    rows = []
    for agent in agents.agents:
        data = agent.to_dict()
        css = ' class="failed"' if agent.lost or agent.cpu_busy_samples else ""
        rows.append(
            f"<tr{css}><td>{escape(agent.name)}</td><td>{escape(agent.host)}</td><td class=\"num\">{agent.cores}</td>"
            f"<td class=\"num\">{agent.joined}/{agent.bots}</td><td class=\"num\">{_ms(agent.start_skew_ms)}</td>"
            f"<td class=\"num\">{_ms(data['cpu_max_percent'])}</td><td class=\"num\">{agent.cpu_busy_samples}</td>"
            f"<td>{escape(agent.error or '')}</td></tr>"
        )
    cpu = [Line(agent.name, list(agent.cpu)) for agent in agents.agents]
    return (
        "<h2>Load agents</h2>\n<table><tr><th>agent</th><th>host</th><th>cores</th><th>bots joined</th>"
        f"<th>start skew ms</th><th>CPU max %</th><th>s over {BUSY_WARNING:.0f}%</th><th></th></tr>\n"
        + "\n".join(rows) + "\n</table>\n"
        + line_chart("Agents' CPU (all cores of each machine)", "%", cpu, result.scenario.duration)
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
