"""One sample's decoding state and bookkeeping, shared by the torch and vLLM engines.

Everything here is engine-independent: appending tokens with provenance and end checks, booking a
model's prefill, starting an intervention, judge checkpoints and rollbacks, and the final record.
The engines keep only what differs: where a model's KV state stands (cache slots vs prefix cache).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sampling import policy as policies
from sampling.records import PROVENANCE_BASE, SampleRecord, SampleRequest


@dataclass
class SampleState:
    """Mutable decoding state of one sample."""

    request: SampleRequest
    record: SampleRecord
    tokens: list[int]
    owner: list[int]  # per token of `tokens`: -1 prompt, 0 base, 1 oracle
    state: policies.PolicyState
    oracle_left: int = 0
    done: bool = False
    entropy: list[float] = field(default_factory=list)  # base entropy per generated position (NaN: not computed)
    called: set[int] = field(default_factory=set)  # models (0 base, 1 oracle) that have run on this sample
    judged: int = 0  # judge policy: generated tokens before this position are settled
    seen: list[int] = field(default_factory=lambda: [0, 0])  # per model: tokens[:seen] it has read (never booked again)

    @classmethod
    def start(cls, request: SampleRequest) -> "SampleState":
        """Initial state of one sample (the oracle policy hands everything to the oracle); ValueError for an empty prompt."""
        if not request.prompt_ids:
            raise ValueError(f"problem {request.problem_id!r}: the prompt has no tokens (a model needs at least one to "
                             "predict the first; add_bos = true, or a template with text, gives it one)")
        record = SampleRecord(request.config_id, request.problem_id, request.sample_index, request.seed)
        spec = request.config.policy
        row = cls(request, record, list(request.prompt_ids), [-1] * len(request.prompt_ids), policies.start(spec, request.seed))
        if spec.name == "oracle":
            row.oracle_left = request.config.max_tokens
        return row

    @property
    def generated(self) -> int:
        """Tokens generated so far."""
        return len(self.tokens) - len(self.request.prompt_ids)

    @property
    def remaining(self) -> int:
        """Tokens left before max_tokens."""
        return self.request.config.max_tokens - self.generated

    @property
    def first_unjudged(self) -> int:
        """Index in `tokens` of the first base token the judge has not settled."""
        return len(self.request.prompt_ids) + self.judged

    def append(self, token: int, who: int, entropy: float, eos_ids: set[int]) -> None:
        """Add a generated token, count it for its model, and check for the end of the sample."""
        self.tokens.append(int(token))
        self.owner.append(who)
        self.entropy.append(entropy)
        if who == PROVENANCE_BASE:
            self.record.base_decode += 1
        else:
            self.record.oracle_decode += 1
        if token in eos_ids:
            self.done, self.record.finish_reason = True, "eos"
        elif self.generated >= self.request.config.max_tokens:
            self.done, self.record.finish_reason = True, "length"

    def book_prefill(self, who: int, start: int) -> None:
        """Model `who` reads tokens[start:]: book those it did not write and has not read before (the whole
        prompt at its first call). An engine may re-read a token it has seen (the judge's oracle re-reads
        the last settled token to predict the next); that is not prefill of a token it had not seen."""
        first_call = who not in self.called
        self.called.add(who)
        begin = 0 if first_call else max(start, self.seen[who])
        foreign = sum(1 for owner in self.owner[begin:] if owner != who)
        self.seen[who] = len(self.tokens)
        if who == PROVENANCE_BASE:
            self.record.base_prefill += foreign
        else:
            self.record.oracle_prefill += foreign

    def hand_to_oracle(self) -> None:
        """Start an intervention: the oracle writes the next k tokens."""
        spec = self.request.config.policy
        policies.record_intervention(spec, self.state)
        self.record.interventions += 1
        self.oracle_left = spec.k

    def judge_due(self) -> bool:
        """Judge policy: a full segment of unjudged base tokens, or the sample just stopped."""
        spec = self.request.config.policy
        if spec.name != "judge" or self.state.used >= spec.max_c or self.generated <= self.judged:
            return False
        return self.done or self.generated - self.judged >= spec.every

    def apply_judgement(self, scores: list[float]) -> int | None:
        """Settle the judged tokens, or roll back to just before the first rejected one and hand over.

        Returns the cut (index in `tokens` of the first token removed), or None when all are kept.
        Rolled-back tokens are counted in `discarded`.
        """
        flagged = policies.judge_flags(self.request.config.policy, self.state, scores)
        if flagged is None:
            self.judged = self.generated
            return None
        cut = self.first_unjudged + flagged
        self.record.discarded += len(self.tokens) - cut
        del self.tokens[cut:], self.owner[cut:], self.entropy[self.judged + flagged :]
        self.seen = [min(seen, cut) for seen in self.seen]  # what follows the cut will be new tokens
        self.done, self.record.finish_reason = False, ""
        self.judged = self.generated
        self.hand_to_oracle()
        return cut

    def finish(self) -> SampleRecord:
        """The record with its token lists filled."""
        prompt_len = len(self.request.prompt_ids)
        self.record.token_ids = self.tokens[prompt_len:]
        self.record.provenance = self.owner[prompt_len:]
        self.record.base_entropy = self.entropy
        return self.record
