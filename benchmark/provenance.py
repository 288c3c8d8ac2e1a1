"""The code revision and package versions of a result: ``graft_core.runtime.provenance`` (one implementation, which
``tables`` can import too), named here for the jobs (``environment.json``) and the summaries."""
from graft_core.runtime.provenance import git_rev, provenance

__all__ = ["git_rev", "provenance"]
