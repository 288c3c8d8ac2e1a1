"""Text-to-image grafting (Table 5): PixArt-Σ, its prompts and text encoder, on top of the stages and evaluation.

``pixart``: the PixArt-Σ teacher (from the Hub, or trained here for tiny/micro), synthetic (prompt → latent) pairs
as a sharded array, the grafted student, prompt-accuracy / GenEval evaluation and latency at 4,096 and 16,384
tokens; ``text``: prompts, the offline text encoder and the wrapper that drives a PixArt-Σ transformer by prompt
ids like a class-conditional DiT. The engine's capture, stage 1 and stage 2 run on it unchanged.
"""
