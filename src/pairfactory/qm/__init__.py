"""The QM half of the pipeline: pair tables → systems and shard plans → seeded random complexes →
engine optimizations (with the isolated-molecule cache) → shards → collect.

Imports only ``pairfactory.pairs`` (its schema) and the shared modules; never ``pairfactory.ml``
(``tests/test_architecture.py`` enforces it).
"""
