"""The built-in model families (``benchmark.family``): DiT (class-conditional ImageNet / digits, the default) and
PixArt-Σ (text-to-image, Table 5). A new family is one module like these, named by ``--plugin``."""
