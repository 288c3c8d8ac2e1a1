"""The code revision and package versions of a result: ``graft_core.provenance`` (one implementation, which
``tables`` can import too), named here for the jobs (``environment.json``) and the summaries."""
from graft_core.provenance import git_rev, provenance

__all__ = ["git_rev", "provenance"]
