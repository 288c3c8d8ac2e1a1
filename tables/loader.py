"""Read ``results/<preset>/<target>/summary.json`` into registry-ordered rows.

Pure: reads files, returns data, never writes and never raises on bad results (``strict=True`` raises instead).
A missing file gives every registry row with status ``"missing"``; an unreadable or malformed file is reported as one
line naming the file and what to do, and its rows are treated as missing.

Returned ROW dicts carry the result-store fields (``row``, ``label``, ``group``, ``site``, ``operator``, ``ratio``,
``strategy``, ``status``, ``metrics``, ``efficiency``, ``extra``) plus these added by the loader:

- ``paper``: the published values for that row (``{"metrics", "efficiency", "extra", "poor", "note"}``) or ``None``;
- ``disk_row``: the id the summary used (matched rows only; differs from ``row`` only for Table 6's grafted row,
  whose id names the teacher's depth and which is matched by its operator, see ``registry.match_key``);
- ``origin``: ``"results"`` (read from the summary), ``"registry"`` (no result yet), ``"unmatched"`` (on disk but not
  in the registry; appended after the registry rows) or ``"table3"`` (fig4a's 10 % rows borrowed from Table 3).

For matched rows ``label``/``group`` (paper wording) are the registry's, and so are ``site``/``operator``/``ratio``/
``strategy`` wherever the registry sets them (the summary's value fills the others).
Metric and efficiency values that are not finite numbers become ``None`` (and are reported).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import STATUSES, as_number, latex_escape
from .paper import paper_values
from .registry import ALIASES, canonical_site, canonical_target, match_key, registry_rows


class SummaryError(ValueError):
    """A summary file that cannot be used (raised only with ``strict=True``)."""


class ResultWarning(UserWarning):
    """Problems found in the result store (missing / malformed files or rows)."""


@dataclass
class Summary:
    target: str  # canonical target (registry, renderer)
    preset: str
    path: Path
    found: bool
    git_rev: str | None
    rows: list[dict]
    problems: list[str] = field(default_factory=list)
    name: str = ""  # the target as requested (``table4`` for the alias): names the output files
    unreadable: str | None = None  # why the summary file exists but cannot be used (then ``found`` is False)
    comparisons: dict | None = None  # the summary's paired FID differences (``benchmark.comparisons``), if any

    def __post_init__(self):
        self.name = self.name or self.target

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def summary_path(results_dir: str | Path, preset: str, target: str) -> Path:
    """Where the driver writes the summary of ``target``. An alias (``table4``) reads its own summary when it exists,
    else its canonical target's (``table3``), and ``table3`` falls back to ``table4``'s the same way (same runs)."""
    results_dir = Path(results_dir)
    canon = canonical_target(target)
    names = [target, canon] + [a for a, c in ALIASES.items() if c == canon and a != target]
    paths = [results_dir / preset / n / "summary.json" for n in dict.fromkeys(names)]
    return next((p for p in paths if p.exists()), paths[0])


def _rerun_hint(preset: str, target: str) -> str:
    flag = "" if preset == "tiny" else f" --preset {preset}"
    return f"`python -m benchmark.run {target}{flag}`"


def read_summary_file(path: Path, preset: str, target: str) -> dict:
    """Parse and shape-check one summary file; raises ``SummaryError`` with a one-line, actionable message."""
    fix = f"re-run {_rerun_hint(preset, target)} to rewrite it, or delete the file"
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SummaryError(f"{path}: cannot read ({e.strerror or e}); {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SummaryError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}); {fix}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise SummaryError(f"{path}: expected an object with a \"rows\" list; {fix}")
    return data


def _clean_numbers(d: Any, where: str, problems: list[str]) -> dict:
    if not isinstance(d, dict):
        if d not in (None, {}):
            problems.append(f"{where}: expected an object, got {type(d).__name__}; ignored")
        return {}
    out = {}
    for k, v in d.items():
        x = as_number(v)
        if x is None and v is not None:
            problems.append(f"{where}.{k}: {v!r} is not a finite number; shown as missing")
        out[k] = x
    return out


def _normalise(raw: dict, where: str, problems: list[str]) -> dict:
    status = raw.get("status")
    if status not in STATUSES:
        problems.append(f"{where}: unknown status {status!r}; treated as missing")
        status = "missing"
    extra = raw.get("extra") if isinstance(raw.get("extra"), dict) else {}
    return {
        "row": str(raw["row"]),
        "label": raw.get("label"),
        "group": raw.get("group"),
        "site": canonical_site(raw.get("site")),
        "operator": raw.get("operator"),
        "ratio": raw.get("ratio"),
        "strategy": raw.get("strategy"),
        "status": status,
        "metrics": _clean_numbers(raw.get("metrics"), f"{where}.metrics", problems),
        "efficiency": _clean_numbers(raw.get("efficiency"), f"{where}.efficiency", problems),
        "extra": extra,
    }


def load_summary_with_meta(results_dir: str | Path, preset: str, target: str, *, strict: bool = False) -> Summary:
    """Registry-ordered rows of ``target`` plus where they came from and what was wrong with them."""
    canon = canonical_target(target)
    path = summary_path(results_dir, preset, target)
    problems: list[str] = []
    disk_rows: list[dict] = []
    git_rev = None
    comparisons = None
    unreadable = None
    found = path.exists()
    if found:
        try:
            data = read_summary_file(path, preset, canon)
        except SummaryError as e:
            if strict:
                raise
            problems.append(f"{e} [all {canon} rows treated as missing]")
            found, unreadable = False, str(e)
        else:
            git_rev = data.get("git_rev")
            comparisons = data.get("comparisons") if isinstance(data.get("comparisons"), dict) else None
            for i, raw in enumerate(data["rows"]):
                where = f"{path}: rows[{i}]"
                if not isinstance(raw, dict) or not raw.get("row"):
                    problems.append(f"{where}: not an object with a \"row\" id; skipped")
                    continue
                disk_rows.append(_normalise(raw, f"{where} ({raw['row']})", problems))
    if strict and problems:
        raise SummaryError(problems[0])

    specs = registry_rows(canon)
    by_key: dict[Any, str] = {}
    for s in specs:
        by_key.setdefault(match_key(canon, s.as_row()), s.row)
    matched: dict[str, dict] = {}
    unmatched: list[dict] = []
    for r in disk_rows:
        rid = by_key.get(match_key(canon, r))
        if rid is None:
            unmatched.append(r)
        elif rid in matched:
            problems.append(f"{path}: rows {matched[rid]['row']!r} and {r['row']!r} both match {rid!r}; kept the first")
        else:
            matched[rid] = r

    pv = paper_values(canon)
    rows = []
    for s in specs:
        base = s.as_row()
        r = matched.get(s.row)
        if r is None:
            row = dict(base, status="missing", metrics={}, efficiency={}, origin="registry")
        else:
            row = dict(r, row=s.row, label=s.label, group=s.group, origin="results", disk_row=r["row"])
            for k in ("site", "operator", "ratio", "strategy"):  # the registry's where it has them
                if base[k] is not None or row.get(k) is None:
                    row[k] = base[k]
            row["extra"] = {**base["extra"], **(r.get("extra") or {})}
        row["paper"] = pv.get(s.row)
        rows.append(row)
    for r in sorted(unmatched, key=lambda r: r["row"]):
        problems.append(f"{path}: row {r['row']!r} is not in the {canon} registry; printed after the paper's rows")
        label = latex_escape(r.get("label") or r["row"])
        rows.append(dict(r, label=label, group=latex_escape(r.get("group") or "Other"), origin="unmatched",
                         paper=None))

    if canon == "fig4a":
        _borrow_table3(results_dir, preset, rows, problems)
    return Summary(canon, preset, path, found, git_rev, rows, problems, name=target, unreadable=unreadable,
                   comparisons=comparisons)


def _borrow_table3(results_dir, preset, rows, problems) -> None:
    """fig4a's 10 %-data points are Table 4's 50 % rows: use them when fig4a has not written its own."""
    need = [r for r in rows if r["origin"] == "registry" and as_number(r["extra"].get("stage2_data")) == 10.0]
    if not need:
        return
    t3 = load_summary_with_meta(results_dir, preset, "table3")
    by_id = {r["row"]: r for r in t3.rows if r["origin"] == "results"}
    for r in need:
        src = by_id.get(f"attn-{r['operator']}-interleaved50")
        if src is not None and src["status"] == "done":
            r.update(status="done", metrics=dict(src["metrics"]), origin="table3")


def load_summary(results_dir: str | Path, preset: str, target: str) -> list[dict]:
    """Registry-ordered ROW dicts for ``target`` (see module docstring); problems are emitted as ``ResultWarning``."""
    summary = load_summary_with_meta(results_dir, preset, target)
    for p in summary.problems:
        warnings.warn(p, ResultWarning, stacklevel=2)
    return summary.rows
