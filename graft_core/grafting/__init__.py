"""What replaces what, where, and what it costs: plans, surgery, layer selection, accounting, depth → width.

A ``plan`` names operators per site and layer; ``surgery`` swaps them into a model's blocks; ``locality`` (band-k
attention mass, Fig. 2) and ``selection`` (with the held-out loss of ``probe``) choose the layers; ``accounting``
gives a plan's analytic FLOPs and parameters; ``restructure`` rewires consecutive blocks into parallel pairs.
"""
