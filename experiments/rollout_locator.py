"""Locate a wrong sample's first wrong token with oracle rollouts (any dataset).

A prefix of the sample is *recoverable* when the oracle, continuing greedily from it, reaches a
correct answer. The first wrong token is the token whose inclusion makes the prefix unrecoverable:
with lo = the longest recoverable prefix length found and hi = lo + 1 unrecoverable, it is token
`lo`. Found by binary search over prefix lengths, assuming recoverability is monotone (once the
oracle cannot recover, a longer prefix does not help): ceil(log2(L + 1)) + 1 greedy rollouts per
sample of length L, all samples advancing together, one engine block per round. Samples whose
problem the oracle cannot solve from the empty prefix are skipped (the locator needs an oracle
that gets the problem right).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams


@dataclass
class _Search:
    """Binary-search state of one sample."""

    prompt: tuple[int, ...]
    tokens: list[int]  # generated tokens without a final EOS
    answer: str
    stopped: bool  # the sample ended with EOS (which then counts as a token after `tokens`)
    lo: int = -1  # longest prefix known recoverable (-1: not yet checked)
    hi: int = 0  # shortest prefix known unrecoverable (len(tokens) + 1: the whole sample)

    def next_probe(self) -> int | None:
        """The prefix length to roll out next (None when decided)."""
        if self.lo < 0:
            return 0
        return None if self.hi - self.lo <= 1 else (self.lo + self.hi) // 2


def locate_by_rollouts(
    engine, decode: Callable[[list[int]], str], grade: Callable[[str, str], bool],
    samples: list[tuple[tuple[int, ...], list[int], str]], max_tokens: int, stop_ids: set[int], block: int = 256,
) -> list[int | None]:
    """For each (prompt ids, generated ids, reference answer): the first wrong token index, or None
    when the oracle cannot solve the problem from scratch or the sample was cut off while still
    recoverable. A final stop token (any of `stop_ids`, the ids the engine stops on) counts as a token:
    stopping too early is a wrong token."""
    searches = []
    for prompt, tokens, answer in samples:
        stopped = bool(tokens) and tokens[-1] in stop_ids
        body = list(tokens[:-1]) if stopped else list(tokens)
        searches.append(_Search(tuple(prompt), body, answer, stopped, hi=len(body) + 1))
    config = GuidedConfig(PolicySpec("oracle"), SamplingParams(0.0), SamplingParams(0.0), max_tokens)
    unsolvable: set[int] = set()
    while True:
        probes = [(i, s.next_probe()) for i, s in enumerate(searches) if i not in unsolvable]
        probes = [(i, length) for i, length in probes if length is not None]
        if not probes:
            break
        for offset in range(0, len(probes), block):
            chunk = probes[offset : offset + block]
            requests = [
                SampleRequest("rollout", str(i), length, 0, searches[i].prompt + tuple(searches[i].tokens[:length]), config)
                for i, length in chunk
            ]
            for (i, length), record in zip(chunk, engine.run_block(requests)):
                search = searches[i]
                text = decode(search.tokens[:length] + record.token_ids)
                if grade(text, search.answer):
                    search.lo = length
                elif length == 0:
                    unsolvable.add(i)
                else:
                    search.hi = length
    return [
        None if i in unsolvable or (s.lo == len(s.tokens) and not s.stopped) else s.lo
        for i, s in enumerate(searches)
    ]
