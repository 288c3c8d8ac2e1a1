"""The two stages of grafting: activation distillation per layer, then end-to-end finetuning.

Stage 1 reads the teacher's activations (``capture``, sized without torch by ``capture_size``; their statistics in
``activation_stats``) and fits each new operator to them (``distill``, which also assembles the grafted student;
``depth_width``: the same for block pairs, Table 6); stage 2 finetunes that student with the diffusion loss, fully
or with LoRA, on one process or under DDP (``finetune``).
"""
