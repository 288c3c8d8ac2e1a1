"""The teachers and how a diffusion transformer is called and trained.

``teacher``: DiT — DiT-XL/2 from the Hub (paper) or trained here (tiny/micro), with ``teacher_id`` its identity
without torch; ``diffusion``: the noise schedule and loss every model trains with; ``ema``: the weight average used
for sampling; ``structure``: the structure a checkpoint must have for a preset's plans. PixArt-Σ's side is
``graft_core.text_to_image``. Nothing here knows a plan.
"""
