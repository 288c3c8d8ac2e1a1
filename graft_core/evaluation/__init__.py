"""Turning a model into the numbers of a table row: sampling, metrics against a reference, latency.

``sampler`` draws class-conditional samples with guidance; ``evaluate`` samples and scores a model in one process
(tiny); ``sample_at_scale`` draws the paper's 50k samples as a sharded, resumable array and ``adm_eval`` scores the
``.npz`` as ADM's evaluator does; ``latency`` times forward passes. The metrics themselves are ``graft_core.metrics``.
"""
