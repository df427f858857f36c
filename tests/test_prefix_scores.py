"""The judge's score memo: exact by prefix, in order, and never a guess."""
from __future__ import annotations

from sampling.prefix_scores import PrefixScores


def test_scores_are_found_only_after_the_same_prefix() -> None:
    memo = PrefixScores()
    memo.remember([1, 2, 3, 4, 5], 2, [0.3, 0.4, 0.5])  # scores of 3, 4, 5 after [1, 2], [1, 2, 3], [1, 2, 3, 4]
    assert memo.known([1, 2, 3, 4, 5], 2) == [0.3, 0.4, 0.5]
    assert memo.known([1, 2, 3, 4, 5, 6], 3) == [0.4, 0.5]  # stops at the first unknown score
    assert memo.known([1, 2, 3, 4, 5], 2, 4) == [0.3, 0.4]
    assert memo.known([1, 2, 3, 9, 5], 2) == [0.3]  # diverges at 9: nothing after it is known
    assert memo.known([7, 2, 3, 4, 5], 2) == []  # another prefix
    assert memo.known([1, 2, 3], 1) == []  # 2 after [1] was never scored (a prompt position)
    assert memo.size == 3


def test_samples_that_share_a_prefix_share_its_scores_and_extend_them() -> None:
    memo = PrefixScores()
    memo.remember([1, 2, 3], 1, [0.5, 0.6])
    memo.remember([1, 2, 4, 8], 2, [0.1, 0.2])  # a sibling of 3 after [1, 2]
    memo.remember([1, 2, 3, 6], 3, [0.9])  # extends the first sample
    assert memo.known([1, 2, 3, 6], 1) == [0.5, 0.6, 0.9]
    assert memo.known([1, 2, 4, 8], 1) == [0.5, 0.1, 0.2]
    memo.remember([1, 2, 3], 2, [0.61])  # a recomputed score replaces the old one without growing the memo
    assert memo.known([1, 2, 3], 2) == [0.61] and memo.size == 5


def test_an_empty_memo_knows_nothing_and_nan_is_never_returned() -> None:
    memo = PrefixScores()
    assert memo.known([1, 2, 3], 0) == []
    memo.remember([1, 2, 3], 2, [0.25])
    assert memo.known([1, 2, 3], 0) == [] and memo.known([1, 2, 3], 1) == []  # unscored nodes on the path
    assert memo.known([1, 2, 3], 2) == [0.25]
