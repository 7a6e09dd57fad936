"""Latency against offered load, every server on one chart (matplotlib, Agg: no display needed).

The gateway and the echo are measured at every rate and drawn as lines; the pure twin and the
in-place floor, measured at the budgets' rate only, as markers there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_FIGURES = (("p50_ms", "p50", "o"), ("p99_ms", "p99", "s"), ("p999_ms", "p99.9", "^"))
_SERVERS = {
    "gateway": ("native gateway", "tab:red", "-"),
    "pure": ("pure-Python gateway", "tab:orange", ""),
    "floor": ("in-place floor", "tab:green", ""),
    "echo": ("bare grpc.aio echo", "tab:blue", "--"),
}


def draw(result: dict[str, Any], path: Path) -> None:
    """One line per server and percentile; x is the offered rate in % of the gateway's saturation."""
    percents = [rate["percent"] for rate in result["rates"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for server, (name, color, style) in _SERVERS.items():
        rates = [rate for rate in result["rates"] if server in rate]
        for key, label, marker in _FIGURES:
            values = [rate[server][key] for rate in rates]
            xs = [rate["percent"] for rate in rates]
            ax.plot(xs, values, style, color=color, marker=marker, label=f"{name} {label}")
    ax.set_yscale("log")
    ax.set_xlabel(f"offered load, % of the gateway's saturation ({result['saturation_rps']:.0f} req/s)")
    ax.set_ylabel("latency from scheduled send (ms)")
    ax.set_xticks(percents)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(
        f"edgeward ExecuteCommand, open loop, loopback: median of {result['rounds']} rounds "
        f"of {result['duration_s']:g} s",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
