"""graft_core — the grafting engine: operators, plans, surgery, two-stage grafting, accounting, analysis.

Importable without Slurm; every function takes explicit inputs and returns explicit outputs so that the benchmark
driver can run each stage as its own job.
"""
__version__ = "0.1.0"
