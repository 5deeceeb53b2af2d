"""A self-contained HTML page: inline CSS, images embedded as base64, no script, no external link."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #222; }
header { background: #24476b; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: 0.85; }
nav { padding: 8px 32px; background: #eef2f6; font-size: 14px; }
nav a { margin-right: 14px; color: #24476b; }
main { padding: 0 32px 40px 32px; max-width: 1300px; }
section { border-bottom: 1px solid #ddd; padding-bottom: 12px; }
h2 { color: #24476b; margin-top: 28px; }
h3 { margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 14px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eef2f6; }
td.text, th.text { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: #eef2f6; border-radius: 6px; padding: 10px 16px; min-width: 150px; }
.card .value { font-size: 22px; font-weight: 600; color: #24476b; }
.card .name { font-size: 12px; color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 10px 24px; align-items: flex-start; }
.grid > figure { width: calc(50% - 12px); }
.grid > div { flex: 0 1 auto; }
figure { margin: 6px 0; }
figure img { max-width: 100%; }
figcaption { font-size: 12px; color: #555; }
p.note { font-size: 13px; color: #555; }
details { margin: 10px 0; }
summary { cursor: pointer; color: #24476b; font-weight: 600; }
.scroll { overflow-x: auto; }
"""


@dataclass
class Section:
    """One titled part of the report; ``anchor`` is its id, used by the navigation bar and by tests."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, markup: str) -> Section:
        """Append a piece of HTML; returns the section so calls chain."""
        self.parts.append(markup)
        return self


def text(content: str, css_class: str | None = None) -> str:
    """An escaped paragraph."""
    class_attribute = f' class="{css_class}"' if css_class else ""
    return f"<p{class_attribute}>{html.escape(content)}</p>"


def heading(content: str) -> str:
    return f"<h3>{html.escape(content)}</h3>"


def image(png: bytes, caption: str, name: str) -> str:
    """A PNG embedded as a data URI; ``name`` ends up in ``data-figure`` so tests can find it."""
    encoded = base64.b64encode(png).decode("ascii")
    return (
        f'<figure data-figure="{html.escape(name)}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def grid(items: list[str]) -> str:
    """Figures two per row, or blocks (``block``) side by side as far as the page is wide."""
    return '<div class="grid">' + "".join(items) + "</div>"


def block(*parts: str) -> str:
    """Markup kept together as one item of a :func:`grid`."""
    return "<div>" + "".join(parts) + "</div>"


def details(summary: str, content: str) -> str:
    """Content folded away under a clickable line (long records)."""
    return f"<details><summary>{html.escape(summary)}</summary>{content}</details>"


def cards(values: dict[str, str]) -> str:
    """Headline numbers as big tiles."""
    tiles = "".join(
        f'<div class="card"><div class="value">{html.escape(value)}</div><div class="name">{html.escape(name)}</div></div>'
        for name, value in values.items()
    )
    return f'<div class="cards">{tiles}</div>'


def format_value(value) -> str:
    """Numbers with 3 significant decimals, integers as they are, missing values as a dash."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer() and abs(value) >= 10:
            return f"{value:,.0f}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def table(frame: pd.DataFrame, name: str, index: bool = False) -> str:
    """An HTML table of a DataFrame; text columns left-aligned, values escaped."""
    frame = frame.reset_index() if index else frame
    header = "".join(
        f'<th class="{"text" if not pd.api.types.is_numeric_dtype(frame[c]) else "number"}">{html.escape(str(c))}</th>'
        for c in frame.columns
    )
    rows = []
    for record in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="{"number" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else "text"}">{html.escape(format_value(v))}</td>'
            for v in record
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table data-table="{html.escape(name)}"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def key_values(values: dict, name: str) -> str:
    """A two-column table of a flat mapping."""
    frame = pd.DataFrame(
        {"field": list(values), "value": [format_value(v) for v in values.values()]}
    )
    return table(frame, name)


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole HTML document."""
    navigation = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{navigation}</nav><main>{body}</main></body></html>\n"
    )
