"""The agents of a run as a terminal table: bots, start skew, CPU of their machines, what went wrong."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .controller import AgentsResult
from .cpu import BUSY_WARNING


def agents_table(result: AgentsResult) -> Table:
    skew = result.start_skew_ms
    table = Table(
        title="agents" + (f" · started within {skew:.1f} ms of each other's common start" if skew is not None else ""),
        title_justify="left",
        caption=f"CPU: all cores of the agent's machine, each second; busy: seconds over {BUSY_WARNING:.0f}%",
        caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False,
    )
    for header in ("agent", "host", "cores", "bots\njoined/planned", "start skew\nms", "CPU max\n%", "busy\ns", ""):
        table.add_column(header, justify="left" if header in ("agent", "host", "") else "right", no_wrap=header != "")
    for agent in result.agents:
        data = agent.to_dict()
        busy = agent.cpu_busy_samples
        table.add_row(
            agent.name, agent.host, str(agent.cores), f"{agent.joined}/{agent.bots}",
            "-" if agent.start_skew_ms is None else f"{agent.start_skew_ms:.1f}",
            "-" if data["cpu_max_percent"] is None else f"{data['cpu_max_percent']:.0f}",
            f"[yellow]{busy}[/]" if busy else "0",
            f"[red]{agent.error}[/]" if agent.error else "",
        )
    return table
