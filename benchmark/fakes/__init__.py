"""Stand-ins the project makes for itself, so that its paper path and its driver can run where the real things cannot.

``prerequisites``: fake paper-preset prerequisites with the paper's structure at a reduced width (a Hugging Face
cache, VAEs, PixArt-Σ, GenEval, ImageNet files, Inception weights, an ADM reference), used by the paper-smoke
rehearsal, preflight tests and the GPU smoke. ``steps``: a fake step runner (records derived from run ids, no torch)
that checks the driver end to end, e.g. ``--steps benchmark.fakes.steps:fake_execute``. Production code never
imports this package (``tests/test_import_graph.py``).
"""
