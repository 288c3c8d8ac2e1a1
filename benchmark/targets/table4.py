"""``table4`` — alias of ``table3``: paper Table 4 holds the metrics of the Table-3 grid (paper §11).

Same rows and runs as ``table3``; the summary is written under ``results/<preset>/table4/``.
"""
from __future__ import annotations

from benchmark.targets import table3

NAME = "table4"
TITLE = table3.TITLE
ALIAS_OF = "table3"
rows = table3.rows
