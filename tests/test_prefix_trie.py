"""Values by exact token prefix (the judge's score memo): exact, in order, and never a guess."""
from __future__ import annotations

from sampling.prefix_trie import PrefixTrie


def test_values_are_found_only_after_the_same_prefix() -> None:
    trie = PrefixTrie()
    trie.put([1, 2, 3, 4, 5], 2, [0.3, 0.4, 0.5])  # the values of 3, 4, 5 after [1, 2], [1, 2, 3], [1, 2, 3, 4]
    assert trie.run([1, 2, 3, 4, 5], 2) == [0.3, 0.4, 0.5]
    assert trie.run([1, 2, 3, 4, 5, 6], 3) == [0.4, 0.5]  # stops at the first position without a value
    assert trie.run([1, 2, 3, 4, 5], 2, 4) == [0.3, 0.4]
    assert trie.run([1, 2, 3, 9, 5], 2) == [0.3]  # diverges at 9: nothing after it is known
    assert trie.run([7, 2, 3, 4, 5], 2) == []  # another prefix
    assert trie.run([1, 2, 3], 1) == []  # 2 after [1] has no value (a prompt position)
    assert trie.size == 3


def test_sequences_that_share_a_prefix_share_its_values_and_extend_them() -> None:
    trie = PrefixTrie()
    trie.put([1, 2, 3], 1, [0.5, 0.6])
    trie.put([1, 2, 4, 8], 2, [0.1, 0.2])  # a sibling of 3 after [1, 2]
    trie.put([1, 2, 3, 6], 3, [0.9])  # extends the first sequence
    assert trie.run([1, 2, 3, 6], 1) == [0.5, 0.6, 0.9]
    assert trie.run([1, 2, 4, 8], 1) == [0.5, 0.1, 0.2]
    trie.put([1, 2, 3], 2, [0.61])  # a new value replaces the old one without growing the trie
    assert trie.run([1, 2, 3], 2) == [0.61] and trie.size == 5


def test_an_empty_trie_knows_nothing_and_a_position_without_a_value_ends_a_run() -> None:
    trie = PrefixTrie()
    assert trie.run([1, 2, 3], 0) == []
    trie.put([1, 2, 3], 2, ["s7"])  # any value: the engine also stores which request will score a token
    assert trie.run([1, 2, 3], 0) == [] and trie.run([1, 2, 3], 1) == []  # positions on the path without values
    assert trie.run([1, 2, 3], 2) == ["s7"]
