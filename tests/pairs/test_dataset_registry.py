"""The dataset registry: a dataset whose systems are sampled under another's name."""

from __future__ import annotations

from pairfactory.pairs.registry import DATASETS, samples_dataset


def test_samples_of_names_a_registered_dataset_of_the_same_molecules() -> None:
    shared = {name: spec.samples_of for name, spec in DATASETS.items() if spec.samples_of}
    # CGIB's FreeSolv-560 rows are FreeSolv v0.52 molecules: its folds read FreeSolv's samples
    assert shared == {"freesolv_cgib": "freesolv"}
    for name, source in shared.items():
        assert DATASETS[source].samples_of is None  # one step, no chains
        assert set(DATASETS[name].target_names) == set(DATASETS[source].target_names)
    assert samples_dataset("freesolv_cgib") == "freesolv"
    # a dataset without one, and a config's own CSV dataset, are their own
    assert samples_dataset("mnsol") == "mnsol"
    assert samples_dataset("my_csv_set") == "my_csv_set"
