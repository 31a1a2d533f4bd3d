"""Self-contained HTML reports with PNG charts (matplotlib, headless), logged as MLflow artifacts.

A report is a title plus sections; a section is a heading and blocks: a paragraph, a table
(list of dicts, one per row) or a chart (a PNG file, embedded as base64 so the report is one
file that opens anywhere).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;"
         "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
         ".bad{color:#b00020;font-weight:bold}")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows as an HTML table, values escaped."""
    if not rows:
        return "<p><em>no rows</em></p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def paragraph(text: str, css: str = "") -> str:
    """Escaped text as an HTML paragraph."""
    return f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>"


def image(png: Path) -> str:
    """A PNG embedded as a data URI, so the report is one file."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(png).stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def write_report(path: Path, title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> Path:
    """Write the report; `sections` are (heading, [html blocks from table/paragraph/image])."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.extend(blocks)
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def line_chart(path: Path, panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
               xlabel: str) -> Path:
    """One subplot per panel title; each panel maps a series label to (x values, y values)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=True):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def bar_chart(path: Path, title: str, labels: Sequence[str], values: Sequence[float],
              errors: Sequence | None = None, ylabel: str = "") -> Path:
    """Bars with optional error bars: `errors` symmetric (one per bar) or [lower, upper] lists."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(labels), list(values), yerr=None if errors is None else list(errors), capsize=6, color="#4c72b0")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
