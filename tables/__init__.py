"""graftbench.tables — LaTeX tables and figures regenerated from the result store, reproduced next to published.

Public API::

    from tables import build_target, load_summary
    rows = load_summary("results", "tiny", "table3")     # registry-ordered ROW dicts (+ "paper", "origin")
    paths = build_target("results", "tiny", "table3")    # writes results/tiny/tables/table3.tex + figures

Command line: ``python -m tables.build --results DIR [--preset P] [--target T]``. Matplotlib is imported only when a
figure is built.
"""
from .loader import ResultWarning, Summary, SummaryError, load_summary, load_summary_with_meta, summary_path
from .registry import ALIASES, TARGETS, canonical_target, registry_rows
from .table3 import highlight_rule, paper_highlights

__all__ = [
    "ALIASES", "TARGETS", "ResultWarning", "Summary", "SummaryError", "build_target", "canonical_target",
    "highlight_rule", "load_summary", "load_summary_with_meta", "paper_highlights", "registry_rows",
    "render_target", "summary_path",
]


def __getattr__(name: str):
    # ``tables.build`` is imported lazily so that ``python -m tables.build`` does not import it twice
    if name in ("build_target", "render_target"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'tables' has no attribute {name!r}")
