"""Layer selection for ``benchmark.dag``: ``graft_core.plan``'s (torch-free), named here only until dag imports it
from there; then this module goes. The Table-1 study layers are ``benchmark.targets.table1.table1_layers``."""
from graft_core.plan import NEEDS_LOCALITY, select_layers

__all__ = ["NEEDS_LOCALITY", "select_layers"]
