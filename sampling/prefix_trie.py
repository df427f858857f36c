"""Values keyed by the exact token prefix they belong to: the judge's scores, and who will compute them.

A judge score is a function of the token sequence alone (one oracle, raw logits at T = 1), so two
samples that agree up to and including a token need it computed once. The vLLM engine's oracle
reuses KV blocks across samples (prefix caching) and then computes no logits for the cached
positions; remembered scores fill them in, and a sample whose next token to score is already
being scored by another sample's request waits for that request instead of sending its own.
Stored in a trie of token ids, so a lookup is exact.
"""
from __future__ import annotations

from typing import Any, Sequence

_Node = dict  # token id -> [value of that token after this node's prefix (None: none), child node]


class PrefixTrie:
    """One value per (prefix, next token), for the sequences of one block of samples."""

    def __init__(self) -> None:
        self._root: _Node = {}
        self.size = 0  # values stored

    def run(self, sequence: Sequence[int], start: int, stop: int | None = None) -> list[Any]:
        """The stored values of sequence[start:stop], up to the first position without one."""
        node = self._root
        for token in sequence[:start]:
            entry = node.get(token)
            if entry is None:
                return []
            node = entry[1]
        values: list[Any] = []
        for token in sequence[start:stop]:
            entry = node.get(token)
            if entry is None or entry[0] is None:
                break
            values.append(entry[0])
            node = entry[1]
        return values

    def put(self, sequence: Sequence[int], start: int, values: Sequence[Any]) -> None:
        """Store values[j] for sequence[start + j] after sequence[:start + j] (replacing what was there)."""
        node = self._root
        for position, token in enumerate(sequence[: start + len(values)]):
            entry = node.get(token)
            if entry is None:
                entry = node[token] = [None, {}]
            if position >= start:
                self.size += entry[0] is None
                entry[0] = values[position - start]
            node = entry[1]
