"""Tables of medians as Markdown, with ketch/peer ratio rows, and the JSON-lines record."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KETCH = "ketch"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    better: str | None  # "higher", "lower", or None: no ratio (counts, text)


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: dict[str, dict[str, Any]]  # server -> column key -> number, text or None
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """ketch's value divided by each peer's, per column that has a direction."""
        mine = self.rows.get(KETCH)
        if mine is None:
            return {}
        ratios: dict[str, dict[str, float | None]] = {}
        for peer, values in self.rows.items():
            if peer == KETCH:
                continue
            ratios[peer] = {}
            for column in self.columns:
                a, b = mine.get(column.key), values.get(column.key)
                usable = column.better and _number(a) and _number(b) and b != 0
                ratios[peer][column.key] = a / b if usable else None
        return ratios

    def as_json(self) -> dict[str, Any]:
        return {"type": "table", **asdict(self), "ratios": self.ratios()}


class Medians:
    """Values gathered per (server, column) over the rounds; a failure is a string."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.errors: dict[tuple[str, str], str] = {}

    def add(self, server: str, key: str, value: float | str) -> None:
        if isinstance(value, str):
            self.errors[server, key] = value
        else:
            self.values[server, key].append(value)

    def get(self, server: str, key: str) -> float | str | None:
        values = self.values.get((server, key))
        if values:
            return statistics.median(values)
        return "fail" if (server, key) in self.errors else None

    def rows(self, servers: list[str], columns: list[Column]) -> dict[str, dict[str, Any]]:
        return {name: {c.key: self.get(name, c.key) for c in columns} for name in servers}

    def error_notes(self) -> list[str]:
        return [f"{server} {key}: {error}" for (server, key), error in self.errors.items()]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if abs(value) >= 0.095 else f"{value:.2g}x"


def render(table: Table) -> str:
    """The table as Markdown: a row per server, then a ketch/peer row per peer."""
    arrows = {"higher": " ↑", "lower": " ↓", None: ""}
    header = ["server"] + [c.label + arrows[c.better] for c in table.columns]
    lines = [f"### {table.title}", "", _row(header), _row(["---"] * len(header))]
    for server, values in table.rows.items():
        lines.append(_row([server] + [fmt(values.get(c.key)) for c in table.columns]))
    for peer, values in table.ratios().items():
        if any(value is not None for value in values.values()):
            cells = [_ratio(values.get(c.key)) for c in table.columns]
            lines.append(_row([f"ketch/{peer}", *cells]))
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


class Record:
    """bench/results/<timestamp>.jsonl: one JSON object a line, written as it comes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, entry: dict[str, Any]) -> None:
        self.file.write(json.dumps(_clean(entry), default=str, allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _clean(value: Any) -> Any:
    """NaN and infinities as null, so that every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def write_markdown(path: Path, header: list[str], tables: list[Table]) -> None:
    body = "\n".join(render(table) for table in tables)
    path.write_text("\n".join(header) + "\n\n" + body, encoding="utf-8")
