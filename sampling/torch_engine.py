"""The torch engine: exact token-level switching between base and oracle, batched across samples.

Every step, each active sample either asks the base (which may hand the next k tokens to the
oracle, per the policy) or continues an oracle segment. Both models keep their own KV cache per
sample and lazily catch up on tokens they have not seen: the base prefills the oracle's k tokens
when it resumes; the oracle prefills everything the base wrote since its last call. Token ids move
between the models as ids, never as text.

Sampling uses counter-based uniforms (a pure function of the sample's seed and position) and
inverse-CDF draws, so a sample does not depend on which other samples share its batch beyond
floating-point effects; the run store fixes block composition so reruns are bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from sampling import policy as policies
from sampling.judge_head import mistake_probability
from sampling.kv_model import KVModel
from sampling.records import PROVENANCE_BASE, PROVENANCE_ORACLE, SampleRecord, SampleRequest, uniforms
from sampling.sample_state import SampleState

BASE_STREAM, ORACLE_STREAM = 0, 1


def step_statistics_tensor(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and top-1 minus top-2 probability of each row's full distribution (T = 1, float64)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    probs = logp.exp()
    entropy = -(probs * logp).nan_to_num().sum(-1)
    top2 = probs.topk(2, dim=-1).values
    return entropy, top2[:, 0] - top2[:, 1]


def step_statistics(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`step_statistics_tensor` as numpy arrays."""
    entropy, margin = step_statistics_tensor(logits)
    return entropy.cpu().numpy(), margin.cpu().numpy()


def sample_tokens(
    logits: torch.Tensor, temperature: np.ndarray, top_p: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """Draw one token per row by inverse CDF with the given uniforms (greedy where temperature is 0)."""
    greedy = temperature == 0
    result = logits.argmax(-1).numpy().copy()
    if greedy.all():
        return result
    rows = np.flatnonzero(~greedy)
    scaled = logits[rows].double() / torch.as_tensor(temperature[rows])[:, None]
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)
    keep = (cumulative - sorted_probs) < torch.as_tensor(top_p[rows])[:, None]  # nucleus (top-1 always kept)
    sorted_probs = sorted_probs * keep
    cumulative = sorted_probs.cumsum(-1)
    target = torch.as_tensor(u[rows])[:, None] * cumulative[:, -1:]
    index = torch.searchsorted(cumulative, target).clamp(max=probs.shape[-1] - 1)
    result[rows] = order.gather(1, index).squeeze(1).numpy()
    return result


@dataclass
class _Row(SampleState):
    """A sample's decoding state plus where it lives in the engine's caches."""

    slot: int = 0  # cache slot (both models); active rows are kept in the lowest slots
    step_entropy: float = float("nan")  # base entropy at the current position, if the base ran


class TorchEngine:
    """Runs blocks of sample requests on a base/oracle pair of HF models with exact switching."""

    name = "torch"

    def __init__(self, base: torch.nn.Module, oracle: torch.nn.Module | None, eos_id: int | Iterable[int], slots: int,
                 max_len: int, vocab_limit: int | None = None):
        self.base = KVModel(base, slots, max_len)
        self.oracle = KVModel(oracle, slots, max_len) if oracle is not None else None
        self.eos_ids = {int(eos_id)} if isinstance(eos_id, int) else {int(i) for i in eos_id}  # any of them ends a sample
        self.slots = slots
        self.max_len = max_len
        # ids >= vocab_limit (embedding padding rows past the tokenizer) are never sampled: the other
        # model of the pair may not be able to read them (None: every row of the model is a token)
        self.vocab_limit = vocab_limit

    def run_block(
        self, requests: list[SampleRequest], on_tokens: Callable[[int], None] | None = None
    ) -> list[SampleRecord]:
        """Draw every requested sample to completion (EOS or max_tokens); records in request order."""
        if len(requests) > self.slots:
            raise ValueError(f"block of {len(requests)} requests exceeds {self.slots} cache slots")
        rows = [_Row.start(req) for req in requests]
        for row in rows:
            need = len(row.request.prompt_ids) + row.request.config.max_tokens
            if need > self.max_len:
                raise ValueError(f"prompt + max_tokens = {need} exceeds the engine's max_len {self.max_len}")
            if row.request.config.policy.name != "base" and self.oracle is None:
                raise ValueError(f"config {row.request.config_id!r} needs an oracle model")
        slots = list(range(len(rows)))
        self.base.reset(slots)
        if self.oracle is not None:
            self.oracle.reset(slots)
        for slot, row in zip(slots, rows):
            row.slot = slot
        self._share_prompts(rows)
        active = list(slots)
        while active:
            before = sum(rows[i].record.base_decode + rows[i].record.oracle_decode for i in active)
            self._step(rows, active)
            produced = sum(rows[i].record.base_decode + rows[i].record.oracle_decode for i in active) - before
            active = self._compact(rows, active)
            if on_tokens is not None:  # tokens written this step, by either model (a judge's rolled-back ones too)
                on_tokens(produced)
        return [row.finish() for row in rows]

    def _share_prompts(self, rows: list[_Row]) -> None:
        """Prefill each distinct prompt (all but its last token) once per model and copy its cache.

        Every sample is still charged its prompt as prefill, at its first call of that model.
        """
        groups: dict[tuple[int, ...], list[_Row]] = {}
        for row in rows:
            groups.setdefault(row.request.prompt_ids, []).append(row)
        prefixes = [(prompt[:-1], members) for prompt, members in groups.items() if len(prompt) > 1]
        for model, needed in ((self.base, lambda r: r.request.config.policy.name != "oracle"),
                              (self.oracle, lambda r: r.request.config.policy.name != "base")):
            users = [(prefix, [r for r in members if needed(r)]) for prefix, members in prefixes]
            users = [(prefix, members) for prefix, members in users if members]
            if model is None or not users:
                continue
            model.forward([members[0].slot for _, members in users], [list(prefix) for prefix, _ in users])
            for prefix, members in users:
                model.copy_prefix(members[0].slot, [r.slot for r in members[1:]], len(prefix))

    def _compact(self, rows: list[_Row], active: list[int]) -> list[int]:
        """Drop finished rows and move the highest-slot active rows into the freed low slots."""
        alive = sorted((i for i in active if not rows[i].done), key=lambda i: rows[i].slot)
        freed = sorted(rows[i].slot for i in active if rows[i].done)
        for slot in freed:
            if not alive or rows[alive[-1]].slot < slot:
                break
            mover = alive.pop()
            for model in (self.base, self.oracle):
                if model is not None:
                    model.move(rows[mover].slot, slot)
            rows[mover].slot = slot
            alive.insert(0, mover)
        return sorted(alive, key=lambda i: rows[i].slot)

    def _step(self, rows: list[_Row], active: list[int]) -> None:
        """Advance every active sample by one token."""
        ask_base: list[int] = []
        for i in active:
            row = rows[i]
            spec = row.request.config.policy
            if row.oracle_left > 0:
                continue
            if not policies.needs_base_stats(spec) and policies.wants_oracle(spec, row.state, row.generated, 0.0, 1.0):
                row.hand_to_oracle()
                continue
            ask_base.append(i)
        if ask_base:
            logits = self._call(self.base, rows, ask_base, PROVENANCE_BASE)
            entropy, margin = step_statistics(logits)
            keep: list[int] = []
            for j, i in enumerate(ask_base):
                row = rows[i]
                row.step_entropy = float(entropy[j])
                spec = row.request.config.policy
                if policies.needs_base_stats(spec) and policies.wants_oracle(
                    spec, row.state, row.generated, float(entropy[j]), float(margin[j])
                ):
                    row.hand_to_oracle()
                else:
                    keep.append(j)
            if keep:
                chosen = [ask_base[j] for j in keep]
                tokens = self._sample(logits[keep], rows, chosen, "base", BASE_STREAM)
                for i, token in zip(chosen, tokens):
                    self._append(rows[i], int(token), PROVENANCE_BASE)
        to_judge = [i for i in ask_base if rows[i].judge_due()]
        if to_judge:
            self._judge(rows, to_judge)
        ask_oracle = [i for i in active if rows[i].oracle_left > 0]
        if ask_oracle:
            logits = self._call(self.oracle, rows, ask_oracle, PROVENANCE_ORACLE)
            tokens = self._sample(logits, rows, ask_oracle, "oracle", ORACLE_STREAM)
            for i, token in zip(ask_oracle, tokens):
                row = rows[i]
                row.oracle_left -= 1
                self._append(row, int(token), PROVENANCE_ORACLE)
                if row.oracle_left == 0 or row.done:
                    row.judged = row.generated  # the judge never re-scores the oracle's own tokens

    def _judge(self, rows: list[_Row], indices: list[int]) -> None:
        """The oracle scores each row's unjudged base tokens in one prefill; roll back at the first it rejects."""
        for i in indices:  # re-read the last settled token so the first unjudged one gets a prediction (not booked again)
            row = rows[i]
            first = row.first_unjudged
            if self.oracle.filled[row.slot] >= first:
                self.oracle.filled[row.slot] = first - 1
        starts = [int(self.oracle.filled[rows[i].slot]) for i in indices]
        per_row = self._call(self.oracle, rows, indices, PROVENANCE_ORACLE, every_position=True)
        for i, start, (logits, hidden) in zip(indices, starts, per_row):
            row = rows[i]
            spec = row.request.config.policy
            first = row.first_unjudged
            if spec.head:  # the head reads the oracle's state after each judged token
                scores = mistake_probability(hidden[first - start : len(row.tokens) - start], spec.head).tolist()
            else:  # the oracle's probability of each judged token, from the state before it
                targets = torch.as_tensor(row.tokens[first:])
                probs = torch.softmax(logits[first - start - 1 : len(row.tokens) - start - 1].double(), dim=-1)
                scores = probs.gather(1, targets[:, None])[:, 0].tolist()
            cut = row.apply_judgement(scores)
            if cut is not None:  # rolled back to just before the rejected token
                self.base.filled[row.slot] = min(self.base.filled[row.slot], cut)
                self.oracle.filled[row.slot] = cut - 1  # the oracle re-reads the last kept token (seen: not booked) to predict the next

    def _call(
        self, model: KVModel, rows: list[_Row], indices: list[int], who: int, every_position: bool = False
    ) -> torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]]:
        """Run `model` on each row's unseen tokens; book prefill tokens (ones it did not write).

        Returns next-token logits per row, or with every_position a list of per-row
        ([chunk length, vocab] logits, [chunk length, hidden] final hidden states).
        """
        logits = torch.empty((len(indices), model.model.config.vocab_size))
        per_row: list[tuple[torch.Tensor, torch.Tensor]] = [(torch.empty(0), torch.empty(0))] * len(indices)
        slots_of = np.array([rows[i].slot for i in indices])
        pending = np.array([len(rows[i].tokens) for i in indices]) - model.filled[slots_of]
        decode, prefill = np.flatnonzero(pending == 1).tolist(), np.flatnonzero(pending > 1).tolist()
        for group in (decode, prefill):  # separate calls: one long catch-up must not pad the rest
            if not group:
                continue
            chunks = []
            for j in group:
                row = rows[indices[j]]
                start = int(model.filled[row.slot])
                chunks.append(row.tokens[start:])
                row.book_prefill(who, start)
            hidden: list[torch.Tensor] = []
            out = model.forward(slots_of[group].tolist(), chunks, every_position=every_position, hidden_out=hidden)
            if every_position:
                for j, chunk, row_logits, row_hidden in zip(group, chunks, out, hidden[0]):
                    per_row[j] = (row_logits[: len(chunk)], row_hidden[: len(chunk)])
            else:
                logits[group] = out
        return per_row if every_position else logits

    def _sample(self, logits: torch.Tensor, rows: list[_Row], indices: list[int], which: str, stream: int) -> np.ndarray:
        """Sample one token per row with that row's sampling params for `which` model."""
        params = [getattr(rows[i].request.config, which) for i in indices]
        seeds = np.array([rows[i].request.seed for i in indices], dtype=np.uint64)
        positions = np.array([rows[i].generated for i in indices], dtype=np.uint64)
        if self.vocab_limit is not None and self.vocab_limit < logits.shape[-1]:
            logits = logits.clone()
            logits[:, self.vocab_limit:] = float("-inf")
        return sample_tokens(
            logits,
            np.array([p.temperature for p in params], dtype=np.float64),
            np.array([p.top_p for p in params], dtype=np.float64),
            uniforms(seeds, positions, stream),
        )

    def _append(self, row: _Row, token: int, who: int) -> None:
        """Add a generated token with the base entropy of its step (NaN if the base did not run)."""
        row.append(token, who, row.step_entropy, self.eos_ids)
        row.step_entropy = float("nan")


def torch_engine_for(pair: Any, slots: int, max_len: int) -> TorchEngine:
    """A TorchEngine for a loaded pair (`sampling.models.load_pair`): stopping on the base's end-of-sequence
    ids (tokenizer and generation_config, as the vLLM engine does) and never sampling ids past the tokenizer."""
    from sampling.models import stop_ids

    return TorchEngine(pair.base, pair.oracle, stop_ids(pair.manifest["base"]["path"], pair.tokenizer), slots=slots,
                       max_len=max_len, vocab_limit=len(pair.tokenizer))
