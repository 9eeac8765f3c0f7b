"""The ML half of the pipeline: featurization and graph cache, pair datasets, models, splits,
training, the evaluation protocol, hyper-parameter selection and the report.

Imports ``pairfactory.pairs`` (its schema and reader), the shard *reader* of
``pairfactory.qm.shards`` and the shared modules; nothing else of ``pairfactory.qm``
(``tests/test_architecture.py`` enforces it).
"""
