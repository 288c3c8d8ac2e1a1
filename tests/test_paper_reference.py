"""docs/paper-reference.md against the code and the shipped CSVs: every quoted number must be the one the suite uses.

The page is parsed, not re-typed here: a table headed by ``tables/paper/<name>.csv`` must match that CSV cell by
cell (numbers as floats, "–" as an empty cell), a backticked field in a hyperparameter table must hold the value
beside it, and each layer list must equal what the named function selects.
"""
from __future__ import annotations

import csv
import importlib
import re
from pathlib import Path

import pytest

from graft_core.grafting.plan import pixart_layers, select_layers
from graft_core.presets import PRESETS, get_preset

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper-reference.md"
PAPER_CSV = ROOT / "tables" / "paper"
EMPTY = {"", "–", "-", "UNKNOWN"}


def tables(text: str) -> list[tuple[str, list[dict[str, str]]]]:
    """(the last non-table line before it, rows as header → cell) for every markdown table in ``text``."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s\-|]+\|$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            context = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            out.append((context, rows))
        else:
            i += 1
    return out


def same(doc_cell: str, csv_cell: str) -> bool:
    if doc_cell in EMPTY or csv_cell in EMPTY:
        return doc_cell in EMPTY and csv_cell in EMPTY
    try:
        return float(doc_cell) == float(csv_cell)
    except ValueError:
        return doc_cell == csv_cell


def resolve(ref: str):
    """``preset.section.field`` (a registered preset) or ``module:ATTR.key.key`` (a module constant)."""
    if ":" in ref:
        module, path = ref.split(":")
        parts = path.split(".")
        value = getattr(importlib.import_module(module), parts[0])
        for key in parts[1:]:
            value = value[key] if isinstance(value, dict) else getattr(value, key)
        return value
    preset, *fields = ref.split(".")
    if preset not in PRESETS:
        raise AssertionError(f"{ref}: {preset!r} is not a preset ({', '.join(PRESETS)})")
    value = get_preset(preset)
    for name in fields:
        value = getattr(value, name)
    return value


def expand(cell: str) -> tuple[int, ...]:
    """"1, 3, 20–27" → (1, 3, 20, 21, …, 27)."""
    out: list[int] = []
    for part in cell.split(","):
        a, _, b = part.strip().partition("–")
        out.extend(range(int(a), int(b or a) + 1))
    return tuple(out)


DOC_TABLES = tables(DOC.read_text())
CSV_TABLES = [(m.group(1), rows) for ctx, rows in DOC_TABLES if (m := re.search(r"tables/paper/(\w+)\.csv", ctx))]
FIELD_ROWS = [row for ctx, rows in DOC_TABLES for row in rows if "field" in row and row["field"].startswith("`")]


def test_every_published_table_is_quoted():
    assert {name for name, _ in CSV_TABLES} >= {"table1", "table2", "table4", "table5", "table6", "fig4a", "fig4b"}
    assert len(FIELD_ROWS) >= 20


@pytest.mark.parametrize("name,rows", CSV_TABLES, ids=[n for n, _ in CSV_TABLES])
def test_quoted_numbers_match_the_csv(name, rows):
    with open(PAPER_CSV / f"{name}.csv", newline="") as fh:
        published = list(csv.DictReader(fh))
    columns = list(rows[0])
    assert set(columns) <= set(published[0]), f"{name}: columns {set(columns) - set(published[0])} not in the CSV"
    unmatched = list(published)
    for row in rows:
        hits = [p for p in unmatched if all(same(row[c], p[c]) for c in columns)]
        assert hits, f"docs/paper-reference.md, {name}: row {row} matches no row of tables/paper/{name}.csv"
        unmatched.remove(hits[0])
    # every CSV row is quoted, except values the CSV keeps as conflicting alternatives (checkpoint-name FIDs)
    left = [p for p in unmatched if "conflicts" not in p.get("source_note", "")]
    assert not left, f"{name}: rows of the CSV missing from docs/paper-reference.md: {left}"


@pytest.mark.parametrize("row", FIELD_ROWS, ids=[r["field"].strip("`") for r in FIELD_ROWS])
def test_hyperparameters_match_the_preset_fields(row):
    actual = resolve(row["field"].strip("`"))
    assert float(actual) == pytest.approx(float(row["value"]), rel=1e-12), (
        f"docs/paper-reference.md says {row['setting']} = {row['value']}, {row['field']} holds {actual}")


def test_layer_lists_match_the_code():
    from benchmark.targets.table1 import TABLE1_LAYERS_28
    from graft_core.text_to_image.pixart import PAPER_LAYERS

    code = {"select_layers": lambda s: select_layers(s, 28), "pixart_layers": lambda _: pixart_layers(28)}
    rows = next(rows for ctx, rows in DOC_TABLES if rows and "strategy" in rows[0] and "code" in rows[0])
    seen = set()
    for row in rows:
        ref = row["code"].strip("`")
        if ref == "TABLE1_LAYERS_28":
            expected = TABLE1_LAYERS_28
        else:
            fn, arg = re.match(r'(\w+)\((?:"(\w+)", )?28\)', ref).groups()
            expected = code[fn](arg)
        assert expand(row["layers"]) == tuple(expected), f"{row['strategy']}: doc {row['layers']} vs {ref}"
        seen.add(ref.split("(")[0])
    assert expand(next(r["layers"] for r in rows if "PixArt" in r["strategy"])) == PAPER_LAYERS
    assert seen == {"select_layers", "pixart_layers", "TABLE1_LAYERS_28"}
