"""The `--html` output of `sfuctl run`: one self-contained page (inline CSS and SVG, no script, no link, no
URL) with the verdicts, the topologies side by side (when the call also ran as a mesh), plots of bitrate,
loss, jitter and RTT per room over time, the server's CPU and bitrate, and the join-time and first-frame
histograms; with load agents, their table and their machines' CPU."""

from __future__ import annotations

from html import escape

from ..agents.cpu import BUSY_WARNING
from ..bots.stats import room_sort_key
from .comparison import compare, comparison_caption, comparison_lines
from .junit import verdict_message
from .metrics import METRICS, Recorder
from .model import Scenario
from .runner import RunResult
from .svg import Band, Line, histogram, line_chart

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 800px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff; font-weight: 600; }
.pass { background: #2e7d32; } .fail { background: #c62828; } .incomplete { background: #ef6c00; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #ddd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { color: #c62828; font-weight: 600; }
.meta { color: #555; } .note { color: #555; font-size: 13px; }
svg.chart { display: block; margin: 8px 0 16px; }
svg .title { font-size: 13px; font-weight: 600; fill: #222; }
svg .tick, svg .legend { font-size: 11px; fill: #444; } svg .empty { font-size: 13px; fill: #999; }
svg .grid { stroke: #e6e6e6; } svg .frame { fill: none; stroke: #999; }
svg .marker { stroke: #888; stroke-dasharray: 2 3; } svg .band { fill: #fbe9e7; }
svg .bar { fill: #1f77b4; }
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
    lines = [
        f"<h1>{escape(scenario.name)} {badge}</h1>",
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
            + (f", {step.impairment.bandwidth_kbps:g} kbps" if step.impairment.bandwidth_kbps else "")
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
        value = "–" if verdict.value is None else f"{verdict.value:.6g}"
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

    def per_room(field: str) -> list[Line]:
        return [Line(room, [(p.t, getattr(p, field)) for p in recorder.rooms[room]]) for room in rooms]

    loss = per_room("loss") + [
        Line(f"{room} before recovery", [(p.t, p.loss_before_recovery) for p in recorder.rooms[room]], dashed=True,
             color=index, legend=False)
        for index, room in enumerate(rooms)
    ]
    server = [Line("in", [(t, s["bitrate_in_bps"]) for t, s in recorder.server]),
              Line("out", [(t, s["bitrate_out_bps"]) for t, s in recorder.server])]
    charts = [
        "<h2>Over time, per room (the bots' view, each second)</h2>",
        line_chart("Received bitrate", "Mb/s", per_room("received_bps"), x_max, scale=1e-6, markers=markers,
                   bands=bands),
        line_chart("Loss after NACK recovery (solid) and before it (dashed), audio and video pooled", "%", loss,
                   x_max, scale=100,
                   markers=markers, bands=bands),
        line_chart("Jitter, mean over consumers", "ms", per_room("jitter_ms"), x_max, markers=markers, bands=bands),
        line_chart("Round-trip time, mean over consumers", "ms", per_room("rtt_ms"), x_max, markers=markers,
                   bands=bands),
        "<h2>Server (its stats stream, each second)</h2>",
        line_chart("Server CPU", "% of a core", [Line("cpu", [(t, s["cpu_percent"]) for t, s in recorder.server])],
                   x_max, markers=markers, bands=bands),
        line_chart("Server bitrate", "Mb/s", server, x_max, scale=1e-6, markers=markers, bands=bands),
        "<h2>Joins and first frames</h2>",
        histogram("Join time", "ms", recorder.values(METRICS["bots.join_ms"], {})),
        histogram("First video frame", "ms", recorder.values(METRICS["consumer.first_frame_ms"], {"kind": "video"})),
    ]
    return "\n".join(charts)


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
