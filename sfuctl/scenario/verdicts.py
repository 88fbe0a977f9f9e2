"""The verdict as `sfuctl run` prints it: a table of the thresholds (measured value, pass or FAIL) and one
outcome line that names the exit code."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from .runner import RunResult


def verdict_table(result: RunResult) -> Table:
    """One row per threshold: metric, expression, warm-up, measured value, samples, result."""
    table = Table(
        title=f"sfuctl run {result.scenario.name} · {result.duration_s:.0f} s · {result.status}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    table.add_column("metric", overflow="fold")
    table.add_column("threshold", no_wrap=True)
    table.add_column("after", justify="right", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for verdict in result.verdicts:
        threshold = verdict.threshold
        table.add_row(
            threshold.key,
            threshold.expression.text.strip(),
            f"{threshold.after:g}s" if threshold.after else "",
            "none" if verdict.value is None else compact(verdict.value),
            str(verdict.samples),
            Text("pass", style="green") if verdict.passed else Text("FAIL", style="bold red"),
        )
    if not result.verdicts:
        table.caption = "no thresholds in this scenario"
    return table


def compact(value: float) -> str:
    """A measured value in at most ~7 characters: 0.0123, 431.2, 55.9k, 1.23M."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.4g}"


def outcome_line(result: RunResult) -> Text:
    """PASS / FAIL / INCOMPLETE with the reason and the exit code."""
    code = result.exit_code
    failed = len(result.failed_verdicts)
    total = len(result.verdicts)
    if result.status == "failed":
        return Text(f"ERROR: {result.error} (exit {code})", style="bold red")
    if result.status == "interrupted":
        return Text(f"INCOMPLETE: interrupted; {total - failed}/{total} thresholds held on the part that ran "
                    f"(exit {code})", style="bold yellow")
    if result.status == "aborted":
        return Text(f"FAIL: aborted when {result.aborted_by} failed (exit {code})", style="bold red")
    if failed:
        return Text(f"FAIL: {failed} of {total} thresholds failed (exit {code})", style="bold red")
    return Text(f"PASS: {total}/{total} thresholds held (exit {code})", style="bold green")
