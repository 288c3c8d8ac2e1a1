"""How work gets onto disk and devices once, resumably: the plumbing every stage shares.

``paths`` (where artefacts live, the one atomic writer), ``cache`` (build-once by hash key under concurrent jobs),
``artefacts`` (the identity and lookup of trained artefacts), ``shards`` (the one resumable shard array),
``distributed`` (process groups from the environment) and ``provenance`` (which code made a result).
"""
