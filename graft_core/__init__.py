"""graft_core — the grafting engine, importable without Slurm or the driver; models and operations, not experiments.

Its parts, one folder each, from the bottom up (each imports only parts below it; ``tests/test_import_graph.py``):
``runtime`` (caches, the atomic writer, shard arrays, process groups, provenance), ``operators`` (what replaces
attention or an MLP), ``data`` (digits, ImageNet latents, the decoder), ``models`` (the DiT teacher, the diffusion
schedule, EMA), ``metrics`` and ``evaluation`` (sampling, ADM evaluation, latency), ``grafting`` (plans, surgery,
locality, layer selection, accounting), ``stages`` (capture, stage 1, stage 2, depth → width) and ``text_to_image``
(PixArt-Σ, Table 5) on top. At the top: the frozen configs (``config``), the presets
(``presets``), the paper's table rows (``table_rows``) and the error classes (``errors``). Every function takes
explicit inputs and returns explicit outputs so that the benchmark driver can run each stage as its own job.
"""
__version__ = "0.1.0"
