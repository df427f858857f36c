"""The oracle's probability of a token after a given prefix, remembered for every sample that shares the prefix.

A judge score is a function of the token sequence alone (one oracle, raw logits at T = 1), so two
samples that agree up to and including a token need it computed once. The vLLM engine's oracle
reuses KV blocks across samples (prefix caching) and then computes no logits for the cached
positions; these scores fill them in. Stored in a trie of token ids, so a lookup is exact.
"""
from __future__ import annotations

import math
from typing import Sequence

_Node = dict  # token id -> [probability of that token after this node's prefix (NaN: unknown), child node]


class PrefixScores:
    """Scores keyed by the exact prefix they were computed after; lives for one block of samples."""

    def __init__(self) -> None:
        self._root: _Node = {}
        self.size = 0  # scores remembered

    def known(self, sequence: Sequence[int], start: int, stop: int | None = None) -> list[float]:
        """The remembered scores of sequence[start:stop], up to the first one not remembered."""
        node: _Node | None = self._root
        for token in sequence[:start]:
            entry = node.get(token)
            if entry is None:
                return []
            node = entry[1]
        scores: list[float] = []
        for token in sequence[start:stop]:
            entry = node.get(token)
            if entry is None or math.isnan(entry[0]):
                break
            scores.append(entry[0])
            node = entry[1]
        return scores

    def remember(self, sequence: Sequence[int], start: int, scores: Sequence[float]) -> None:
        """Store scores[j] as the score of sequence[start + j] after sequence[:start + j]."""
        node = self._root
        for position, token in enumerate(sequence[: start + len(scores)]):
            entry = node.get(token)
            if entry is None:
                entry = node[token] = [math.nan, {}]
            if position >= start:
                if math.isnan(entry[0]):
                    self.size += 1
                entry[0] = scores[position - start]
            node = entry[1]
