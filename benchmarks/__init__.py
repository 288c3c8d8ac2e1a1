"""Performance benchmarks of graftbench (GitHub issue 9). See ``benchmarks/README.md``.

Each module is a script: ``python -m benchmarks.operators`` (or ``python benchmarks/operators.py``); ``--quick``
runs a seconds-scale version, ``--help`` lists the settings. Shared helpers live in ``benchmarks.common``.
"""
