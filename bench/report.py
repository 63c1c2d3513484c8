"""What every benchmark writes: a printed table, and ``<out>/<name>.md``, ``.json`` and ``.png``.

Figures in one result come from one run on one machine, so their ratios can be checked; the machine
block records what that machine was.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        **{p: _version(p) for p in ("onnxruntime", "onnxruntime-gpu", "torch", "transformers")},
    }


def write_result(
    out: Path,
    name: str,
    title: str,
    tables: list[Table],
    figures: dict[str, Any],
    plot: Any = None,
    summary: tuple[str, ...] | list[str] = (),
) -> Path:
    """Print the tables; write ``<name>.md`` (with the plot), ``<name>.json`` (all figures) and
    ``<name>.png`` (``plot``: a matplotlib figure, closed here). Returns the Markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    about = machine()
    parts = [f"# {title}", "", *summary, ""]
    parts += [table.markdown() for table in tables]
    if plot is not None:
        plot.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(plot)
        parts.append(f"![{title}]({name}.png)\n")
    parts.append("Measured on: " + ", ".join(f"{k} {v}" for k, v in about.items()) + "\n")
    markdown = "\n".join(parts)
    (out / f"{name}.md").write_text(markdown)
    (out / f"{name}.json").write_text(
        json.dumps(
            {"title": title, "machine": about, "tables": [asdict(t) for t in tables], **figures}, indent=2
        )
    )
    print(markdown)
    return out / f"{name}.md"
