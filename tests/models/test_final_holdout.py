"""The final model's holdout: part of it whole solutes, the rest random pairs, one seeded draw."""

from __future__ import annotations

import numpy as np
import pytest

from pairfactory.errors import UserError
from pairfactory.ml.final import FinalSettings, holdout_rows


def _recurring_solutes(n_solutes: int, seed: int = 3) -> list[str]:
    """Solutes in 1 to 6 pairs each, shuffled (as MNSol's recur over its solvents)."""
    rng = np.random.default_rng(seed)
    solutes = [f"S{k}" for k in range(n_solutes) for _ in range(rng.integers(1, 7))]
    return [solutes[k] for k in rng.permutation(len(solutes))]


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_where_each_solute_is_in_one_pair_the_holdout_is_the_random_draw(share: float) -> None:
    """The draw of final models trained before the share existed, row for row: their finished
    members are reused on the very holdout they were trained with."""
    solutes = [f"S{k}" for k in range(200)]
    drawn = holdout_rows(solutes, 0.1, seed=7, solute_share=share)
    before = np.sort(np.random.default_rng(7).permutation(200)[:20])
    assert drawn.pair_draw and drawn.whole_solutes == 0
    np.testing.assert_array_equal(drawn.holdout, before)
    np.testing.assert_array_equal(drawn.train, np.setdiff1d(np.arange(200), before))


def test_the_share_is_drawn_as_whole_solutes_and_the_rest_as_pairs() -> None:
    solutes = _recurring_solutes(150)
    n_rows = len(solutes)
    n_holdout = round(0.1 * n_rows)
    drawn = holdout_rows(solutes, 0.1, seed=0, solute_share=0.5)
    assert len(drawn.holdout) == n_holdout and not drawn.pair_draw
    assert sorted(np.concatenate([drawn.train, drawn.holdout]).tolist()) == list(range(n_rows))
    training = {solutes[row] for row in drawn.train}
    pairs_of = {s: solutes.count(s) for s in set(solutes)}
    unseen = [row for row in drawn.holdout if solutes[row] not in training]
    whole = {solutes[row] for row in unseen if pairs_of[solutes[row]] > 1}
    # the random pairs may complete a solute by chance: at least the ones drawn whole
    assert len(whole) >= drawn.whole_solutes > 0
    # at least the share is unseen by training; a random draw of pairs leaves far fewer unseen
    assert len(unseen) >= round(0.5 * n_holdout)
    plain = holdout_rows(solutes, 0.1, seed=0, solute_share=0.0)
    plain_training = {solutes[row] for row in plain.train}
    assert sum(solutes[row] not in plain_training for row in plain.holdout) < len(unseen)
    # seeded: the same draw again, another with another seed
    again = holdout_rows(solutes, 0.1, seed=0, solute_share=0.5)
    np.testing.assert_array_equal(again.holdout, drawn.holdout)
    other = holdout_rows(solutes, 0.1, seed=1, solute_share=0.5)
    assert not np.array_equal(other.holdout, drawn.holdout)


def test_a_solute_of_many_pairs_is_drawn_as_often_as_any_other() -> None:
    """One solute of 20 pairs among 380 of one pair: with room for 40 pairs of whole solutes, a
    draw uniform over solutes holds it out in about 1 of 10 seeds (a walk over the rows, which
    meets one of its 20 pairs early, would in 9 of 10)."""
    solutes = ["BIG"] * 20 + [f"S{k}" for k in range(380)]
    held_whole = [
        "BIG" not in {solutes[row] for row in holdout_rows(solutes, 0.2, seed, 0.5).train}
        for seed in range(200)
    ]
    assert 0.02 < np.mean(held_whole) < 0.25


def test_a_share_of_one_holds_out_only_unseen_solutes() -> None:
    solutes = _recurring_solutes(150)
    drawn = holdout_rows(solutes, 0.2, seed=2, solute_share=1.0)
    training = {solutes[row] for row in drawn.train}
    # solutes too big for the room left are passed over for smaller ones, so it fills exactly
    assert all(solutes[row] not in training for row in drawn.holdout)
    assert len(drawn.holdout) == round(0.2 * len(solutes))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UserError, match="holdout_solute_share"):
        FinalSettings(holdout_solute_share=1.5)
    with pytest.raises(UserError, match="at least 4 pairs"):
        holdout_rows(["A", "A", "B"], 0.1, seed=0, solute_share=0.5)
