"""The sampler: policies, exact switching, token accounting, determinism, resume, sharding."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sampling import policy as policies
from sampling.config import ConfigError, parse_experiment
from sampling.models import ModelError, load_pair
from sampling.policy import PolicySpec
from sampling.records import GuidedConfig, SampleRequest, SamplingParams, derive_seed, uniforms
from sampling.runner import config_manifest, run_experiment
from sampling.store import RunDirError, read_samples
from sampling.torch_engine import TorchEngine, sample_tokens, step_statistics

REPO = Path(__file__).resolve().parent.parent
MAX_TOKENS = 96

SMALL_EXPERIMENT = {
    "name": "small", "dataset": "toy", "problems": 5, "n": 4, "seed": 7, "max_tokens": MAX_TOKENS,
    "models": {"base": "toy:base", "oracle": "toy:oracle"},
    "configs": [
        {"policy": "base"},
        {"policy": "oracle"},
        {"policy": "random", "c": 2, "k": 3, "ref_length": 40},
        {"policy": "entropy", "tau": 0.3, "k": 3, "max_c": 2},
        {"policy": "margin", "delta": 0.5, "k": 2, "max_c": 3},
    ],
}


@pytest.fixture(scope="module")
def prompts(toy_prompts):
    return toy_prompts(10)


def _requests(prompts, config: GuidedConfig, n: int, config_id: str = "c") -> list[SampleRequest]:
    return [
        SampleRequest(config_id, f"p{j}", i, derive_seed(0, f"p{j}", config_id, i), prompt, config)
        for j, prompt in enumerate(prompts) for i in range(n)
    ]


def _hf_greedy(model, prompt, eos_id: int, pad_id: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id)
    return out[0, len(prompt):].tolist()


# ---------------------------------------------------------------- pure parts

def test_policy_specs_validate() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        PolicySpec("judge-ish")
    with pytest.raises(ValueError, match="k >= 1"):
        PolicySpec("random", c=2, k=0)
    with pytest.raises(ValueError, match="tau"):
        PolicySpec("entropy", k=2, max_c=1)
    with pytest.raises(ValueError, match="max_c"):
        PolicySpec("margin", k=2, delta=0.2)


def test_random_positions_are_distinct_sorted_and_seeded() -> None:
    spec = PolicySpec("random", c=5, k=2, ref_length=20)
    state = policies.start(spec, 123)
    assert len(set(state.positions)) == 5 and state.positions == sorted(state.positions)
    assert all(0 <= p < 20 for p in state.positions)
    assert policies.start(spec, 123).positions == state.positions
    first = state.positions[0]
    assert not policies.wants_oracle(spec, state, first - 1, 0, 1) if first > 0 else True
    assert policies.wants_oracle(spec, state, first, 0, 1)
    policies.record_intervention(spec, state)
    assert state.used == 1 and len(state.positions) == 4


def test_threshold_policies_respect_max_c() -> None:
    spec = PolicySpec("entropy", tau=1.0, k=2, max_c=1)
    state = policies.start(spec, 0)
    assert not policies.wants_oracle(spec, state, 0, 0.9, 0.0)
    assert policies.wants_oracle(spec, state, 0, 1.1, 0.0)
    policies.record_intervention(spec, state)
    assert not policies.wants_oracle(spec, state, 1, 5.0, 0.0)
    margin = PolicySpec("margin", delta=0.2, k=2, max_c=3)
    assert policies.wants_oracle(margin, policies.start(margin, 0), 0, 0.0, 0.1)
    assert not policies.wants_oracle(margin, policies.start(margin, 0), 0, 0.0, 0.3)


def test_step_statistics_match_definitions() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]]))
    entropy, margin = step_statistics(logits)
    assert entropy[0] == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert margin.tolist() == pytest.approx([0.25, 0.85])


def test_inverse_cdf_sampling_matches_the_distribution() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    rows = 40000
    logits = torch.log(probs).repeat(rows, 1)
    u = uniforms(np.arange(rows, dtype=np.uint64), np.zeros(rows, dtype=np.uint64), 0)
    draws = sample_tokens(logits, np.ones(rows), np.ones(rows), u)
    freq = np.bincount(draws, minlength=4) / rows
    assert np.abs(freq - probs.numpy()).max() < 0.01
    nucleus = sample_tokens(logits, np.ones(rows), np.full(rows, 0.65), u)  # keeps 0.4, 0.3 (cum 0.7 >= 0.65)
    assert set(np.unique(nucleus)) == {2, 3}
    assert np.bincount(nucleus, minlength=4)[3] / rows == pytest.approx(0.4 / 0.7, abs=0.01)
    greedy = sample_tokens(logits[:3], np.zeros(3), np.ones(3), u[:3])
    assert greedy.tolist() == [3, 3, 3]


def test_uniforms_are_a_pure_function_of_seed_and_position() -> None:
    seeds = np.array([1, 2, 3], dtype=np.uint64)
    a = uniforms(seeds, np.array([5, 5, 5], dtype=np.uint64), 0)
    assert np.array_equal(a, uniforms(seeds, np.array([5, 5, 5], dtype=np.uint64), 0))
    assert len(set(a.tolist())) == 3 and ((a > 0) & (a < 1)).all()
    assert not np.array_equal(a, uniforms(seeds, np.array([5, 5, 5], dtype=np.uint64), 1))


# ---------------------------------------------------------------- the engine on the real toy models

def test_greedy_oracle_only_and_base_only_equal_hf_greedy(pair, prompts) -> None:
    tok = pair.tokenizer
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=16, max_len=200)
    for name, model in (("oracle", pair.oracle), ("base", pair.base)):
        config = GuidedConfig(PolicySpec(name), SamplingParams(0), SamplingParams(0), MAX_TOKENS)
        records = engine.run_block(_requests(prompts, config, 1))
        for record, prompt in zip(records, prompts):
            assert record.token_ids == _hf_greedy(model, prompt, tok.eos_token_id, tok.pad_token_id)
            assert set(record.provenance) == {1 if name == "oracle" else 0}


def _check_accounting(record, prompt_len: int, k: int | None) -> None:
    prov = np.array(record.provenance)
    assert len(prov) == len(record.token_ids) == len(record.base_entropy)
    assert record.base_decode == int((prov == 0).sum())
    assert record.oracle_decode == int((prov == 1).sum())
    base_pos, oracle_pos = np.flatnonzero(prov == 0), np.flatnonzero(prov == 1)
    # a model prefills the prompt plus the other model's tokens written before its last call
    expected_base_prefill = prompt_len + (int((oracle_pos < base_pos[-1]).sum()) if len(base_pos) else 0)
    expected_oracle_prefill = (prompt_len + int((base_pos < oracle_pos[-1]).sum())) if len(oracle_pos) else 0
    if len(base_pos) == 0 and record.interventions == 0:
        expected_base_prefill = 0
    assert record.oracle_prefill == expected_oracle_prefill
    if record.interventions == 0 or len(base_pos):
        assert record.base_prefill >= expected_base_prefill
    entropy = np.array(record.base_entropy)
    assert not np.isnan(entropy[base_pos]).any()  # the base's entropy is known at every base step
    if k is not None:  # runs of oracle tokens are whole interventions of k (the last may be cut by EOS/length)
        runs = np.split(oracle_pos, np.flatnonzero(np.diff(oracle_pos) != 1) + 1) if len(oracle_pos) else []
        assert sum(math.ceil(len(r) / k) for r in runs) == record.interventions
        for r in runs[:-1]:
            assert len(r) % k == 0
        if runs and runs[-1][-1] != len(prov) - 1:
            assert len(runs[-1]) % k == 0


def test_random_policy_provenance_and_accounting(pair, prompts) -> None:
    tok = pair.tokenizer
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=64, max_len=200)
    spec = PolicySpec("random", c=3, k=4, ref_length=30)
    config = GuidedConfig(spec, SamplingParams(1.0), SamplingParams(1.0), MAX_TOKENS)
    records = engine.run_block(_requests(prompts[:6], config, 8))
    assert sum(r.interventions for r in records) > 0
    for record, prompt in zip(records, [p for p in prompts[:6] for _ in range(8)]):
        _check_accounting(record, len(prompt), spec.k)
        # replay the policy: interventions start exactly at the drawn positions (deferred past oracle segments)
        pending, expected, i = list(policies.start(spec, record.seed).positions), [], 0
        while i < len(record.provenance):
            if pending and i >= pending[0]:
                expected.append(i)
                pending.pop(0)
                i += spec.k
            else:
                i += 1
        prov = record.provenance
        observed = [i for i, who in enumerate(prov) if who == 1 and (i == 0 or prov[i - 1] == 0 or (i - _run_start(prov, i)) % spec.k == 0)]
        assert observed == expected
        assert record.interventions == len(expected)
        # the base's entropy is missing exactly where the oracle wrote
        assert all(math.isnan(e) == (who == 1) for e, who in zip(record.base_entropy, prov))


def test_ids_past_the_tokenizer_are_never_sampled(padded_pair_dir, prompts, tmp_path: Path) -> None:
    """A pair whose embedding tables are padded past the tokenizer (Qwen2.5): unmasked, the padding ids
    get sampled; the engine that `study sample` builds never samples them."""
    from sampling.runner import make_engine

    padded = load_pair(str(padded_pair_dir / "base"), str(padded_pair_dir / "oracle"))
    assert padded.base.config.vocab_size == 128 and len(padded.tokenizer) == 100
    config = GuidedConfig(PolicySpec("random", c=3, k=4, ref_length=30), SamplingParams(1.0), SamplingParams(1.0), MAX_TOKENS)
    requests = _requests(prompts[:4], config, 8)
    unmasked = TorchEngine(padded.base, padded.oracle, padded.tokenizer.eos_token_id, slots=32, max_len=200)
    assert any(t >= 100 for r in unmasked.run_block(requests) for t in r.token_ids)  # the setup bites
    engine = make_engine(_experiment(), padded, block_size=32, max_len=200, threads=None)
    records = engine.run_block(requests)
    assert all(t < 100 for r in records for t in r.token_ids) and sum(r.interventions for r in records) > 0


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_kv_cache_loop_keeps_sliding_window_attention(family: str) -> None:
    """Mistral and Qwen2 (with its window on, some layers full) attend within a sliding window: the
    cache loop's logits, prefilled then decoded token by token in two slots at different positions,
    match the HF model's full forward pass."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from sampling.kv_model import KVModel

    torch.manual_seed(0)
    sizes = dict(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, sliding_window=6)
    model = (MistralForCausalLM(MistralConfig(**sizes)) if family == "mistral" else
             Qwen2ForCausalLM(Qwen2Config(**sizes, use_sliding_window=True, max_window_layers=1))).eval()
    sequences = [torch.randint(3, 50, (30,)).tolist(), torch.randint(3, 50, (30,)).tolist()]
    cache = KVModel(model, slots=2, max_len=64)
    cache.forward([0, 1], [sequences[0][:12], sequences[1][:5]])
    for step in range(12):
        ends = [13 + step, 6 + step]
        logits = cache.forward([0, 1], [[sequences[0][ends[0] - 1]], [sequences[1][ends[1] - 1]]])
        with torch.no_grad():
            for row, end in enumerate(ends):
                reference = model(torch.tensor([sequences[row][:end]])).logits[0, -1]
                assert torch.allclose(logits[row], reference, atol=1e-4), (family, step, row)


def _run_start(prov: list[int], i: int) -> int:
    while i > 0 and prov[i - 1] == 1:
        i -= 1
    return i


def test_entropy_policy_triggers_only_above_threshold(pair, prompts) -> None:
    tok = pair.tokenizer
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=64, max_len=200)
    spec = PolicySpec("entropy", tau=0.4, k=3, max_c=2)
    config = GuidedConfig(spec, SamplingParams(1.0), SamplingParams(0.0), MAX_TOKENS)
    records = engine.run_block(_requests(prompts[:6], config, 6))
    assert any(r.interventions for r in records)
    for record, prompt in zip(records, [p for p in prompts[:6] for _ in range(6)]):
        _check_accounting(record, len(prompt), spec.k)
        assert record.interventions <= spec.max_c
        prov, entropy = record.provenance, record.base_entropy
        starts = [i for i, who in enumerate(prov) if who == 1 and (i == 0 or prov[i - 1] == 0)]
        for i in starts:  # an intervention starts where the base's entropy exceeded tau
            assert entropy[i] > spec.tau
        if record.interventions < spec.max_c:  # below the cap, no base token was written above tau
            assert all(e <= spec.tau for e, who in zip(entropy, prov) if who == 0)


def test_a_missing_local_model_folder_is_named(tmp_path: Path) -> None:
    """A path that is not there is said to be missing, not sent to the hub as a malformed repo id."""
    with pytest.raises(ModelError, match=r"model folder not found: .*/nope \(looked at"):
        load_pair(str(tmp_path / "nope"), None)


def test_refuses_tokenizer_mismatch(tmp_path: Path, pair) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(pair.manifest["oracle"]["path"], other)
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = "x", "y"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="different tokenizers"):
        load_pair("toy:base", str(other))


def test_tokenizer_mismatch_in_special_tokens_only_says_which(pair) -> None:
    """Same vocabulary, different special tokens: the message names them (it showed an empty vocab diff)."""
    import copy

    from sampling.models import check_same_tokenizer

    other = copy.deepcopy(pair.tokenizer)
    other.pad_token = "<unk>"
    with pytest.raises(ModelError, match=r"special tokens \(base, oracle\): \{'pad_token': \("):
        check_same_tokenizer(pair.tokenizer, other, "a", "b")


# ---------------------------------------------------------------- run store: determinism, shards, resume

def _experiment(**changes):
    return parse_experiment({**SMALL_EXPERIMENT, **changes}, "test")


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["config_id", "problem_id", "sample_index"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    run_experiment(_experiment(), run_dir, block_size=8, report=lambda _: None)
    return run_dir


def test_a_run_too_large_to_plan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """An n past the int32 sample index, or a plan of more than MAX_BLOCKS blocks, is a clear error, not an
    overflow after a block was sampled or a plan that exhausts memory; no run dir is left behind."""
    from sampling import runner

    with pytest.raises(ValueError, match=r"n = 1,000,000,000,000 samples per problem is more than the samples table "
                                         r"can index \(2,147,483,648\)"):
        run_experiment(_experiment(n=10**12), tmp_path / "huge", block_size=8, report=lambda _: None)
    with pytest.raises(ValueError, match=r"2 problem\(s\) x 1 config\(s\) x n = 1,000,000,000 is 2,000,000,000 "
                                         r"samples in 250,000,000 blocks of at most 8: more than study plans at once"):
        run_experiment(_experiment(problems=2, n=10**9, configs=[{"policy": "base"}]), tmp_path / "many", block_size=8,
                       report=lambda _: None)
    assert not (tmp_path / "huge").exists() and not (tmp_path / "many").exists()
    runner.check_plan_size(500, 4, 10_000, 512, 1)  # LLMonkeys' scale plans (400,000 blocks)


def test_an_out_inside_a_run_dir_is_refused(reference_run: Path) -> None:
    """--out mistyped into an existing run's samples folder would have its shards read as that run's
    samples (grades and counts silently changed): refused before anything is written."""
    from sampling import store

    before = sorted(p.relative_to(reference_run) for p in reference_run.rglob("*"))
    with pytest.raises(RunDirError, match=r"inside the run directory .*reference"):
        run_experiment(_experiment(), reference_run / "samples" / "oops", block_size=8, report=lambda _: None)
    assert sorted(p.relative_to(reference_run) for p in reference_run.rglob("*")) == before
    store.check_not_nested(reference_run.parent / "sibling")  # beside a run dir is fine


def test_a_failed_manifest_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while writing the manifest: an error, and no .tmp file left behind."""
    from sampling import store

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", full)
    with pytest.raises(OSError):
        store._atomic_write_bytes(tmp_path / "_manifest.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_run_dir_contents_and_pandas_reads_it(reference_run: Path) -> None:
    frame = pd.read_parquet(reference_run)
    assert len(frame) == 5 * 4 * 5
    assert set(frame.config_id) == {"base", "oracle", "random-c2-k3", "entropy-t0.3-k3-m2", "margin-d0.5-k2-m3"}
    assert not frame.duplicated(["config_id", "problem_id", "sample_index"]).any()
    manifest = json.loads((reference_run / "_manifest.json").read_text())
    assert manifest["models"]["base"]["n_params"] < manifest["models"]["oracle"]["n_params"]
    assert len(manifest["models"]["oracle"]["sha256"]) == 64
    assert manifest["n"] == 4 and "torch" in manifest["versions"]
    oracle = frame[frame.config_id == "oracle"]
    assert (oracle.base_decode == 0).all() and (oracle.base_prefill == 0).all() and (oracle.interventions == 0).all()
    base = frame[frame.config_id == "base"]
    assert (base.oracle_decode == 0).all() and (base.oracle_prefill == 0).all()
    assert (base.base_decode == base.token_ids.map(len)).all()


def test_same_seed_same_samples_and_rerun_is_a_no_op(reference_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    run_experiment(_experiment(), again, block_size=8, report=lambda _: None)
    pd.testing.assert_frame_equal(_sorted(read_samples(reference_run)), _sorted(read_samples(again)))
    result = run_experiment(_experiment(), again, block_size=8, report=lambda _: None)
    assert result.samples_written == 0 and result.blocks_done == 0
    other_seed = tmp_path / "other"
    run_experiment(_experiment(seed=8, configs=[{"policy": "base"}]), other_seed, block_size=8, report=lambda _: None)
    base_ref = _sorted(read_samples(reference_run).query("config_id == 'base'"))
    assert not base_ref.text.equals(_sorted(read_samples(other_seed)).text)


def test_block_plan_is_fixed_and_problem_major() -> None:
    """The plan decides which samples are drawn together, so it must never change (old run dirs resume
    with it): groups of problems, each config's (problem, index) pairs problem-major, cut every block_size."""
    from sampling.runner import plan_blocks

    blocks = plan_blocks(["p0", "p1", "p2"], ["a", "b"], n=3, block_size=4, group_size=2)
    assert [(b.config_id, b.key, b.items) for b in blocks] == [
        ("a", "g00000-c000", [("p0", 0), ("p0", 1), ("p0", 2), ("p1", 0)]),
        ("a", "g00000-c001", [("p1", 1), ("p1", 2)]),
        ("b", "g00000-c000", [("p0", 0), ("p0", 1), ("p0", 2), ("p1", 0)]),
        ("b", "g00000-c001", [("p1", 1), ("p1", 2)]),
        ("a", "g00001-c000", [("p2", 0), ("p2", 1), ("p2", 2)]),
        ("b", "g00001-c000", [("p2", 0), ("p2", 1), ("p2", 2)]),
    ]
    assert [b.size for b in blocks] == [4, 2, 4, 2, 3, 3]


def test_sharded_union_equals_unsharded(reference_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "sharded"
    for index in range(3):
        run_experiment(_experiment(), run_dir, shard=(index, 3), block_size=8, report=lambda _: None)
    pd.testing.assert_frame_equal(_sorted(read_samples(reference_run)), _sorted(read_samples(run_dir)))


def test_a_finished_run_is_checked_without_writing(reference_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-running a finished experiment takes no lock and writes nothing (a run one may only read, a stale lock);
    one that adds something to the run still takes the lock."""
    import shutil

    from sampling import store as store_module

    run_dir = tmp_path / "copy"
    shutil.copytree(reference_run, run_dir)

    def no_lock(*args, **kwargs):
        raise AssertionError("the manifest lock was taken")

    manifest = json.loads((run_dir / "_manifest.json").read_text())
    manifest["prompt"]["system"] = "Be brief."  # recorded by a version that ignored a system message without chat
    store_module.write_manifest(run_dir, manifest)
    monkeypatch.setattr(store_module, "_manifest_lock", no_lock)
    assert run_experiment(_experiment(), run_dir, block_size=8, report=lambda _: None).samples_written == 0
    with pytest.raises(AssertionError, match="lock was taken"):
        run_experiment(_experiment(cost={"model": "decode"}), run_dir, block_size=8, report=lambda _: None)


def test_a_different_dataset_file_of_the_same_name_is_named_as_the_cause(tmp_path: Path) -> None:
    """math500/test.jsonl and gsm8k/test.jsonl share a name (and a default --out): the refusal names both files."""
    for folder, answer in (("a", "3"), ("b", "4")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "test.jsonl").write_text(json.dumps({"problem": "Compute 1+2.", "answer": answer}) + "\n")
    configs = [{"policy": "base"}]
    run_dir = tmp_path / "run"
    run_experiment(_experiment(dataset=str(tmp_path / "a" / "test.jsonl"), n=1, configs=configs), run_dir,
                   report=lambda _: None)
    with pytest.raises(RunDirError, match=r"different 'problems_sha256' \(the dataset was '.*a/test.jsonl' and is "
                                          r"'.*b/test.jsonl' now: files of one name whose problems differ"):
        run_experiment(_experiment(dataset=str(tmp_path / "b" / "test.jsonl"), n=1, configs=configs), run_dir,
                       report=lambda _: None)


def test_changed_config_is_refused_and_new_config_is_added(reference_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(reference_run, run_dir)
    changed = [{"policy": "random", "c": 2, "k": 3, "ref_length": 40, "base_temperature": 0.5, "id": "random-c2-k3"}]
    with pytest.raises(RunDirError, match=r"config 'random-c2-k3' .* other settings \(base_temperature: 1.0 -> 0.5\)"):
        run_experiment(_experiment(configs=changed), run_dir, block_size=8, report=lambda _: None)
    with pytest.raises(RunDirError, match=r"5 configs in .* other settings:\n  base: max_tokens: \d+ -> 9(.|\n)*  margin-"):
        run_experiment(_experiment(max_tokens=9), run_dir, block_size=8, report=lambda _: None)  # every config at once
    with pytest.raises(RunDirError, match="different 'n'"):
        run_experiment(_experiment(n=5), run_dir, block_size=8, report=lambda _: None)
    with pytest.raises(RunDirError, match=r"\(5 problems, now 6: check --problems/--levels\)"):
        run_experiment(_experiment(problems=6), run_dir, block_size=8, report=lambda _: None)
    with pytest.raises(RunDirError, match="Pass --engine torch to continue it"):  # refused before vLLM starts
        run_experiment(_experiment(engine="vllm"), run_dir, block_size=8, report=lambda _: None)
    before = read_samples(run_dir)
    added = SMALL_EXPERIMENT["configs"] + [{"policy": "random", "c": 1, "k": 2, "ref_length": 40}]
    run_experiment(_experiment(configs=added), run_dir, block_size=8, report=lambda _: None)
    after = read_samples(run_dir)
    assert len(after) == len(before) + 5 * 4
    pd.testing.assert_frame_equal(_sorted(before), _sorted(after[after.config_id != "random-c1-k2"]))


def test_blocks_record_engine_seconds_for_the_seconds_cost_model(reference_run: Path) -> None:
    """Every shard records the engine and its wall-clock seconds; `--cost seconds` divides them over the samples."""
    import pyarrow.parquet as pq

    from rich.console import Console

    from fit.pipeline import fit_run_dir
    from sampling.cli import summary_table
    from sampling.runner import device_name
    from sampling.store import ENGINE_KEY, config_seconds, shard_seconds

    totals: dict[str, float] = {}
    for shard in (reference_run / "samples").glob("*/*.parquet"):
        seconds = shard_seconds(shard)
        assert seconds is not None and seconds > 0
        assert pq.read_schema(shard).metadata[ENGINE_KEY] == b"torch"
        totals[shard.parent.name] = totals.get(shard.parent.name, 0.0) + seconds
    run = fit_run_dir(reference_run, cost_model="seconds")
    assert run.cost_model == "seconds" and run.cost_unit == "engine seconds"
    per_sample = config_seconds(reference_run)
    for config, total in totals.items():
        assert run.curves[config].cost * 5 * 4 == pytest.approx(total)  # 5 problems x n=4 per config
        assert per_sample[config] * 5 * 4 == pytest.approx(total)
    console = Console(width=200, record=True)
    console.print(summary_table(reference_run))
    text = console.export_text()
    assert "engine ms/sample" in text and f"{1000 * per_sample['oracle']:.2f}" in text
    device = device_name()
    assert run.notes[-1] == f"engine seconds measured on {device}" and "threads" in device


def test_seconds_from_different_devices_are_flagged(reference_run: Path, tmp_path: Path) -> None:
    """A run whose blocks were timed on different devices (a heterogeneous Slurm array) says so in the fit's notes."""
    import shutil

    import pyarrow.parquet as pq

    from fit.pipeline import fit_run_dir
    from sampling.store import DEVICE_KEY

    run_dir = tmp_path / "mixed"
    shutil.copytree(reference_run, run_dir)
    shard = sorted((run_dir / "samples" / "oracle").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, DEVICE_KEY: b"NVIDIA H100 80GB HBM3"}), shard)
    notes = fit_run_dir(run_dir, cost_model="seconds").notes
    assert any("measured on 2 different devices" in note and "oracle: " in note and "NVIDIA H100 80GB HBM3" in note
               for note in notes), notes


def test_status_counts_blocks_and_estimates_the_time_left(reference_run: Path, tmp_path: Path) -> None:
    """`study status`: samples/blocks done per config from the plan and the shards, time left at the measured rate."""
    import shutil

    from typer.testing import CliRunner

    from experiments.cli import app
    from sampling.status import run_status

    complete = {row.config: row for row in run_status(reference_run)}
    assert all(r.samples_done == r.samples_total == 20 and r.blocks_done == r.blocks_total for r in complete.values())
    assert all(r.seconds_left == 0 for r in complete.values())
    run_dir = tmp_path / "partial"
    shutil.copytree(reference_run, run_dir)
    oracle_shards = sorted((run_dir / "samples" / "oracle").glob("*.parquet"))
    oracle_shards[0].unlink()
    for shard in (run_dir / "samples" / "base").glob("*.parquet"):
        shard.unlink()
    partial = {row.config: row for row in run_status(run_dir)}
    oracle = partial["oracle"]
    assert oracle.blocks_done == oracle.blocks_total - 1 and oracle.samples_done < 20
    assert oracle.seconds_left == pytest.approx(oracle.seconds_per_sample * (20 - oracle.samples_done))
    assert partial["base"].samples_done == 0 and partial["base"].seconds_left is None
    result = CliRunner().invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    done = sum(r.samples_done for r in partial.values())
    assert f"{done:,} of 100 samples" in result.output and "no timed block yet, estimated at the mean rate (base)" in result.output
    assert CliRunner().invoke(app, ["status", str(tmp_path / "nothing")]).exit_code == 2
    from fit.pipeline import fit_run_dir

    notes = fit_run_dir(run_dir).notes
    assert any(n.startswith("the run is still incomplete: base (0/20), oracle (") for n in notes), notes
    assert not any("incomplete" in n for n in fit_run_dir(reference_run).notes)
    result = CliRunner().invoke(app, ["verify", str(run_dir)])  # verify says so too
    assert result.exit_code == 0 and "note: the run is still incomplete: base (0/20), oracle (" in result.output, result.output


def test_cost_section_is_recorded_and_is_fits_default(reference_run: Path, tmp_path: Path) -> None:
    """[cost] goes into the manifest (a later config may change it: no samples are touched) and sets `study fit`'s model."""
    import shutil

    from fit.pipeline import fit_run_dir

    run_dir = tmp_path / "costed"
    shutil.copytree(reference_run, run_dir)
    assert "cost" not in json.loads((run_dir / "_manifest.json").read_text())
    assert fit_run_dir(run_dir).cost_model == "flops"
    before = read_samples(run_dir)
    result = run_experiment(_experiment(cost={"model": "decode"}), run_dir, block_size=8, report=lambda _: None)
    assert result.samples_written == 0
    assert json.loads((run_dir / "_manifest.json").read_text())["cost"] == {"model": "decode"}
    pd.testing.assert_frame_equal(before, read_samples(run_dir))
    assert fit_run_dir(run_dir).cost_model == "decode"
    prices = {"base": {"input": 0.1, "output": 0.2}, "oracle": {"input": 1, "output": 2}}
    run_experiment(_experiment(cost={"model": "price", "prices": prices}), run_dir, block_size=8, report=lambda _: None)
    priced = fit_run_dir(run_dir)
    assert priced.cost_model == "price"
    oracle = before[before.config_id == "oracle"]
    expected = (oracle.oracle_prefill.sum() * 1 + oracle.oracle_decode.sum() * 2) / 1e6 / len(oracle)
    assert priced.curves["oracle"].cost == pytest.approx(expected)
    assert fit_run_dir(run_dir, cost_model="flops").cost_model == "flops"  # --cost overrides


def test_bad_experiment_configs_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_experiment({**SMALL_EXPERIMENT, "nn": 3}, "x.toml")
    with pytest.raises(ConfigError, match=r"\[\[configs\]\] #1: random policy needs"):
        parse_experiment({**SMALL_EXPERIMENT, "configs": [{"policy": "random", "c": 0, "k": 2}]}, "x.toml")
    with pytest.raises(ConfigError, match=r"#1: policy 'random' needs k \(oracle tokens per intervention\); it is missing"):
        parse_experiment({**SMALL_EXPERIMENT, "configs": [{"policy": "random", "c": 2}]}, "x.toml")
    with pytest.raises(ConfigError, match=r"#2: policy 'entropy' needs k \(oracle tokens per intervention\); it is missing"):
        parse_experiment({**SMALL_EXPERIMENT, "configs": [{"policy": "base"}, {"policy": "entropy", "tau": 1, "max_c": 2}]},
                         "x.toml")
    with pytest.raises(ConfigError, match=r"needs c \(oracle interventions per sample\) and k \(.*\); they are missing"):
        parse_experiment({**SMALL_EXPERIMENT, "configs": [{"policy": "random"}]}, "x.toml")
    with pytest.raises(ConfigError, match="duplicate config id"):
        parse_experiment({**SMALL_EXPERIMENT, "configs": [{"policy": "base"}, {"policy": "base"}]}, "x.toml")
    with pytest.raises(ConfigError, match=r"x.toml: \[cost\] model must be one of flops, decode, price, seconds, got 'wall'"):
        parse_experiment({**SMALL_EXPERIMENT, "cost": {"model": "wall"}}, "x.toml")
    with pytest.raises(ConfigError, match=r"\[cost\] model 'price' needs prices"):
        parse_experiment({**SMALL_EXPERIMENT, "cost": {"model": "price"}}, "x.toml")
    with pytest.raises(ConfigError, match=r"\[cost\] prices: prices must look like"):
        parse_experiment({**SMALL_EXPERIMENT, "cost": {"model": "price", "prices": {"base": {"input": 1}}}}, "x.toml")
    with pytest.raises(ConfigError, match=r"unknown \[cost\] key\(s\) \['unit'\]"):
        parse_experiment({**SMALL_EXPERIMENT, "cost": {"unit": "s"}}, "x.toml")


@pytest.mark.parametrize("change,message", [
    ({"sampling": {"base_temprature": 0.6}}, r"\[sampling\]: unknown key\(s\) \['base_temprature'\]"),
    ({"sampling": 1}, r"\[sampling\] must be a table"),
    ({"sampling": {"top_p": "0.9"}}, r"\[sampling\] top_p must be a finite number, got '0.9'"),
    ({"n": 2.7}, r"x.toml: n must be an integer, got 2.7"),
    ({"n": "ten"}, r"x.toml: n must be an integer, got 'ten'"),
    ({"seed": "x"}, r"x.toml: seed must be an integer"),
    ({"problems": -2}, r"x.toml: problems must be >= 1"),
    ({"problems": "2"}, r"x.toml: problems must be an integer"),
    ({"levels": 3}, r"x.toml: levels must be a list of integers"),
    ({"levels": [1, "2"]}, r"x.toml: levels must be an integer, got '2'"),
    ({"prompt": {"chat": "false"}}, r"\[prompt\] chat must be true or false, got 'false'"),
    ({"prompt": {"template": "{problem} {x}"}}, r"\[prompt\] template may use only the field \{problem\}.*got \{x\}"),
    ({"prompt": {"template": "{problem.foo}"}}, r"template may use only the field \{problem\}.*without attribute.*\{problem.foo\}"),
    ({"prompt": {"template": "{problem[0]}"}}, r"template may use only the field \{problem\}.*got \{problem\[0\]\}"),
    ({"prompt": {"template": "{problem!r} {problem!s}"}}, r"template may use only the field \{problem\}.*got \{problem!r\}$"),
    ({"prompt": {"template": "{problem:{w}}"}}, r"template may use only the field \{problem\}.*KeyError: 'w'"),
    ({"prompt": {"template": "{problem"}}, r"template may use only the field \{problem\}.*ValueError"),
    ({"prompt": {"system": "Be brief."}}, r"x.toml: \[prompt\] system is a chat template's system message: it needs chat = true"),
    ({"configs": [{"policy": "judge", "alpha": 0.2, "k": 2, "max_c": 1, "head": " "}]}, r"#1: head is empty"),
    ({"configs": [{"policy": "base", "id": "b" * 121}]}, r"#1: config id 'bbbb.*has 121 characters, at most 120"),
    ({"configs": [{"policy": "random", "c": 1, "k": 10**130}]}, r"#1: config id 'random-c1-k1000.*at most 120"),
    ({"cost": {"model": "price", "prices": {"base": {"input": "0.02", "output": 1}, "oracle": {"input": 1, "output": 2}}}},
     r"\[cost\] prices: prices must be numbers"),
    ({"cost": {"model": "price", "prices": {"base": {"input": 1, "output": True}, "oracle": {"input": 1, "output": 2}}}},
     r"\[cost\] prices: prices must be numbers"),
    ({"cost": {"model": "price", "prices": {"base": {"input": 1, "output": 2, "ouput": 3}, "oracle": {"input": 1, "output": 2}}}},
     r"\[cost\] prices: prices must look like .*got base = .*ouput"),
    ({"cost": {"model": "price", "prices": {"base": {"input": 1, "output": 2}, "oracle": {"input": 1, "output": 2}, "judge": {}}}},
     r"\[cost\] prices: prices must look like .*judge"),
    ({"prompt": {"template": "Q: {{problem}}"}}, r"\[prompt\] template must contain \{problem\}.*literal text"),
    ({"prompt": {"template": "Q:"}}, r"\[prompt\] template must contain \{problem\}"),
    ({"configs": [{"policy": "base"}, {"policy": "random", "c": [], "k": 2}]}, r"#2: c is an empty list"),
    ({"configs": [{"policy": "random", "c": [], "k": []}]}, r"#1: c, k are empty lists"),
    ({"engine_options": 5}, r"engine_options must be a table"),
    ({"models": {"base": "toy:base", "oracle": "toy:oracle", "judge": "x"}}, r"\[models\]: unknown key"),
    ({"configs": {"policy": "base"}}, r"configs must be a list of tables"),
    ({"configs": [{"policy": "random", "c": 1, "k": 2.9}]}, r"\[\[configs\]\] #1: k must be an integer, got 2.9"),
    ({"configs": [{"policy": "random", "c": [1, 1.5], "k": 2}]}, r"#1: c must be an integer, got 1.5"),
    ({"configs": [{"policy": "entropy", "tau": "0.5", "k": 2, "max_c": 1}]}, r"#1: tau must be a finite number, got '0.5'"),
    ({"configs": [{"policy": "entropy", "tau": 0.5, "k": 2, "max_c": 1.5}]}, r"#1: max_c must be an integer"),
    ({"sampling": {"top_p": 1.5}}, r"x.toml: \[sampling\] top_p must be in \(0, 1\], got 1.5"),
    ({"sampling": {"oracle_temperature": -1}}, r"x.toml: \[sampling\] oracle_temperature must be 0 \(greedy\) or at least 1e-05, got -1"),
    ({"sampling": {"base_temperature": 1e-310}}, r"x.toml: \[sampling\] base_temperature must be 0 \(greedy\) or at least 1e-05, got 1e-310"),
    ({"configs": [{"policy": "oracle", "oracle_temperature": 1e-6}]}, r"#1: temperature must be 0 \(greedy\) or at least 1e-05 \(vLLM samples smaller ones greedily\), got 1e-06"),
    ({"configs": [{"policy": "base", "k": 5}]}, r"#1: k does not apply to policy 'base' \(its settings: none\)"),
    ({"configs": [{"policy": ["base", "oracle"]}]}, r"#1: policy must be a string, got \['base', 'oracle'\]"),
    ({"configs": [{"policy": "oracle", "max_tokens": 3}]}, r"#1: unknown key\(s\) \['max_tokens'\]"),
    ({"sampling": {"base_temperature": float("nan")}}, r"\[sampling\] base_temperature must be a finite number, got nan"),
    ({"sampling": {"oracle_temperature": float("inf")}}, r"oracle_temperature must be a finite number, got inf"),
    ({"configs": [{"policy": "entropy", "tau": float("nan"), "k": 2, "max_c": 1}]}, r"#1: tau must be a finite number, got nan"),
    ({"configs": [{"policy": "base", "base_temperature": float("nan")}]}, r"#1: base_temperature must be a finite number"),
    ({"configs": [{"policy": "random", "c": 1, "k": 2, "ref_length": 0}]}, r"#1: random policy needs ref_length >= 1"),
    ({"configs": [{"policy": "judge", "alpha": 0.2, "k": 2, "max_c": 1, "every": 0}]}, r"#1: judge policy needs every >= 1"),
    ({"configs": [{"policy": "judge", "k": 2, "max_c": 1}]}, r"#1: judge policy needs alpha in \(0, 1\).*got alpha=None"),
    ({"configs": [{"policy": "entropy", "tau": 0.5, "k": 2}]}, r"#1: policy 'entropy' needs max_c >= 1 .*; it is missing"),
    ({"configs": [{"policy": "margin", "delta": 0.5, "k": 2, "max_c": 0}]}, r"#1: policy 'margin' needs max_c >= 1 .*; got max_c=0"),
    ({"configs": [{"policy": "base", "id": ""}]}, r"#1: id must be letters, digits and _.+-"),
    ({"configs": [{"policy": "oracle", "base_temperature": 0.3}]}, r"#1: base_temperature does not apply to policy 'oracle'"),
    ({"configs": [{"policy": "base", "oracle_temperature": 0}]}, r"#1: oracle_temperature does not apply to policy 'base'"),
    ({"configs": [{"policy": "base", "id": "../x"}]}, r"#1: id must be letters, digits and _.+-.*'../x'"),
    ({"configs": [{"policy": "base", "id": "_ref"}]}, r"#1: id must be letters"),
    ({"name": "../../escape"}, r"x.toml: name names the run dir .* got '../../escape'"),
    ({"name": ""}, r"x.toml: name names the run dir"),
    ({"dataset": " "}, r"x.toml: dataset is empty"),
    ({"models": {"base": "", "oracle": "toy:oracle"}}, r"x.toml: \[models\] base is empty"),
    ({"configs": [{"policy": "margin", "delta": 0.5, "k": 2, "max_c": 1, "tau": 1}]},
     r"#1: tau does not apply to policy 'margin' \(its settings: delta, k, max_c\)"),
])
def test_config_values_are_type_checked(change: dict, message: str) -> None:
    """Every TOML value has its type checked, naming the file and key: no silent truncation, coercion or ignored key."""
    with pytest.raises(ConfigError, match=message):
        parse_experiment({**SMALL_EXPERIMENT, **change}, "x.toml")


def test_relative_paths_in_an_experiment_file_are_read_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder, like a dataset file, named relative to the TOML loads from any working folder; a UTF-8
    byte-order mark (some Windows editors write one) is skipped."""
    import shutil

    from sampling.config import load_experiment
    from sampling.models import TOY_MODELS_DIR

    folder = tmp_path / "exp"
    shutil.copytree(TOY_MODELS_DIR / "base", folder / "models" / "mybase")
    (folder / "problems.jsonl").write_text('{"problem": "Compute 1+2.", "answer": "3"}\n')
    (folder / "rel.toml").write_text('\ufeffdataset = "problems.jsonl"\nn = 2\n[models]\nbase = "models/mybase"\n'
                                     '[[configs]]\npolicy = "base"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(Path("exp/rel.toml"))
    assert experiment.models["base"] == str(Path("exp") / "models" / "mybase")
    assert experiment.dataset == str(Path("exp") / "problems.jsonl")
    result = run_experiment(experiment, tmp_path / "run", block_size=8, report=lambda _: None)
    assert result.samples_written == 2


def test_unreadable_experiment_files_are_named(tmp_path: Path) -> None:
    """A folder, or a file that is not UTF-8, as --config: the error names the file and says what is wrong."""
    from sampling.config import load_experiment

    with pytest.raises(ConfigError, match="is not a file"):
        load_experiment(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: not UTF-8 text"):
        load_experiment(bad)


def test_non_finite_policy_and_sampling_values_are_refused() -> None:
    """The pure cores refuse nan/inf thresholds and temperatures too (not only the TOML reader)."""
    from sampling.policy import PolicySpec
    from sampling.records import SamplingParams

    with pytest.raises(ValueError, match="tau must be a finite number"):
        PolicySpec("entropy", k=2, tau=float("nan"), max_c=1)
    with pytest.raises(ValueError, match="finite"):
        SamplingParams(temperature=float("inf"))


def _small_toml(path: Path) -> Path:
    lines = [f'{key} = {json.dumps(value)}' for key, value in SMALL_EXPERIMENT.items() if key not in ("models", "configs")]
    lines += ["[models]", 'base = "toy:base"', 'oracle = "toy:oracle"']
    for entry in SMALL_EXPERIMENT["configs"]:
        lines.append("[[configs]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _sample_command(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.cli", "sample", "--config", str(config), "--out", str(run_dir),
            "--block-size", "8", "--threads", "1", *extra]


def test_concurrent_shard_workers_fill_one_new_run_dir(reference_run: Path, tmp_path: Path) -> None:
    config = _small_toml(tmp_path / "small.toml")
    run_dir = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen(_sample_command(config, run_dir, "--shard", f"{i}/2"), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()[-2000:]
    assert not (run_dir / ".creating").exists()
    pd.testing.assert_frame_equal(_sorted(read_samples(reference_run)), _sorted(read_samples(run_dir)))


def test_kill_nine_then_resume_equals_uninterrupted(reference_run: Path, tmp_path: Path) -> None:
    config = _small_toml(tmp_path / "small.toml")
    run_dir = tmp_path / "killed"
    command = _sample_command(config, run_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run_dir / "samples").glob("*/*.parquet"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(list((run_dir / "samples").glob("*/*.parquet")))
    assert 3 <= partial < 15, "the run should have been killed midway"
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pd.testing.assert_frame_equal(_sorted(read_samples(reference_run)), _sorted(read_samples(run_dir)))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_says_how_to_continue_and_resume_equals_uninterrupted(reference_run: Path, tmp_path: Path,
                                                                     stop: signal.Signals) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (`kill`, a Slurm time limit) mid-run: exit 130 with a one-line hint (no traceback),
    no temp files; the log (stderr is not a terminal) got a plain progress line, not a bar drawn at the end;
    re-running completes the same samples."""
    config = _small_toml(tmp_path / "small.toml")
    run_dir = tmp_path / "interrupted"
    command = _sample_command(config, run_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list((run_dir / "samples").glob("*/*.parquet"))) < 3:
        time.sleep(0.05)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    text = err.decode()
    assert process.returncode == 130, text[-2000:]
    assert "interrupted: the finished blocks are saved in" in text and "Traceback" not in text
    assert re.search(r"^\S+ \(block \d+/15\) +\d+/\d+ samples [\d,]+ tok/s \d+:\d\d:\d\d ETA", text, re.M), text[-2000:]
    assert "━" not in text
    assert not list((run_dir / "samples").glob("*/.*"))
    assert len(list((run_dir / "samples").glob("*/*.parquet"))) < 15, "the run should have been interrupted midway"
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pd.testing.assert_frame_equal(_sorted(read_samples(reference_run)), _sorted(read_samples(run_dir)))


CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<a>{% endif %}")


def test_chat_prompts_are_the_templates_tokens_with_one_bos(pair) -> None:
    """chat = true (every real config): the ids transformers' own apply_chat_template gives, system message
    included, one BOS whatever add_bos says; a tokenizer without a chat template is a clear error."""
    from sampling.config import PromptFormat
    from sampling.datasets import Problem
    from sampling.runner import encode_prompt

    tokenizer = copy.deepcopy(pair.tokenizer)
    problem = Problem(id="x", problem="Compute 1+2.", answer="3", level=1, subject="arithmetic")
    with pytest.raises(ValueError, match="has no chat template"):
        encode_prompt(tokenizer, problem, PromptFormat(chat=True))
    tokenizer.chat_template = CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 1+2.\nBox it."}]
    expected = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))
    for add_bos in (False, True):
        ids = encode_prompt(tokenizer, problem, PromptFormat("{problem}\nBox it.", chat=True, system="Be brief.", add_bos=add_bos))
        assert list(ids) == expected and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids) == "<bos><system>Be brief.\n<user>Compute 1+2.\nBox it.\n<a>"
    plain = encode_prompt(tokenizer, problem, PromptFormat("{problem}\n", add_bos=True))
    assert list(plain) == [tokenizer.bos_token_id] + tokenizer.encode("Compute 1+2.\n", add_special_tokens=False)
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                               "{% endif %}{{ bos_token }}{{ messages[-1]['content'] }}")  # as Gemma's template does
    assert tokenizer.decode(encode_prompt(tokenizer, problem, PromptFormat(chat=True))) == "<bos>Compute 1+2.\n"
    with pytest.raises(ValueError, match=r"the chat template of .* refuses the prompt: System role not supported; drop "
                                         r"\[prompt\] system"):
        encode_prompt(tokenizer, problem, PromptFormat(chat=True, system="Be brief."))


def test_chat_templates_that_print_todays_date_get_a_fixed_one(pair) -> None:
    """Llama 3.2's template prints strftime_now() unless given date_string: prompts must not depend on the day."""
    from sampling.config import PromptFormat
    from sampling.datasets import Problem
    from sampling.runner import CHAT_DATE_STRING, encode_prompt

    tokenizer = copy.deepcopy(pair.tokenizer)
    tokenizer.chat_template = (
        "{%- if not date_string is defined %}{%- if strftime_now is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
        "{%- else %}{%- set date_string = '1 Jan 1999' %}{%- endif %}{%- endif %}"
        "{{ bos_token }}Today: {{ date_string }}\n{{ messages[-1]['content'] }}\n")
    problem = Problem(id="x", problem="Compute 1+2.", answer="3", level=1, subject="arithmetic")
    text = tokenizer.decode(encode_prompt(tokenizer, problem, PromptFormat(chat=True)))
    assert text == f"<bos>Today: {CHAT_DATE_STRING}\nCompute 1+2.\n"  # (jinja drops the template's final newline)


def test_prompts_that_encode_differently_are_refused_on_resume(reference_run: Path, tmp_path: Path) -> None:
    """The manifest records a digest of every prompt's token ids; a resume whose prompts encode otherwise is
    refused (a changed tokenizer or chat template), and run dirs from before the digest still continue."""
    import shutil

    run_dir = tmp_path / "prompts"
    shutil.copytree(reference_run, run_dir)
    manifest_path = run_dir / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["prompts_sha256"]) == 64
    manifest["prompts_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="different 'prompts_sha256' .the same prompt settings now give other token ids"):
        run_experiment(_experiment(), run_dir, block_size=8, report=lambda _: None)
    del manifest["prompts_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    assert run_experiment(_experiment(), run_dir, block_size=8, report=lambda _: None).samples_written == 0


def test_shipped_experiment_configs_parse() -> None:
    from sampling.config import load_experiment

    files = sorted((REPO / "experiments").glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        experiment = load_experiment(path)
        assert experiment.configs and experiment.models["base"]


def test_judge_rollback_keeps_accounting_consistent(pair, prompts) -> None:
    from sampling.rescore import token_statistics

    tok = pair.tokenizer
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=64, max_len=200)
    spec = PolicySpec("judge", k=3, alpha=0.1, every=8, max_c=20)
    config = GuidedConfig(spec, SamplingParams(1.0), SamplingParams(1.0), MAX_TOKENS)
    requests = _requests(prompts[:6], config, 6)
    records = engine.run_block(requests)
    assert sum(r.interventions for r in records) > 0 and sum(r.discarded for r in records) > 0
    for record, request in zip(records, requests):
        prov = np.array(record.provenance)
        assert len(prov) == len(record.token_ids) == len(record.base_entropy)
        # rolled-back base tokens were computed: base_decode counts them, `discarded` says how many
        assert record.base_decode == int((prov == 0).sum()) + record.discarded
        assert record.oracle_decode == int((prov == 1).sum())
        # the oracle read every base token at least once to judge it (plus the prompt)
        assert record.oracle_prefill >= len(request.prompt_ids) + int((prov == 0).sum()) - spec.every
        assert not np.isnan(np.array(record.base_entropy)[prov == 0]).any()
        if record.interventions < spec.max_c:  # every kept base token passed the judge
            stats = token_statistics(pair.oracle, list(request.prompt_ids), record.token_ids)
            assert (stats.token_prob[prov == 0] >= spec.alpha - 1e-6).all()
        runs = np.split(np.flatnonzero(prov == 1), np.flatnonzero(np.diff(np.flatnonzero(prov == 1)) != 1) + 1)
        assert sum(math.ceil(len(r) / spec.k) for r in runs if len(r)) <= record.interventions


@pytest.mark.parametrize("every", [1, 8])
def test_judge_books_each_token_the_oracle_reads_once(pair, prompts, every: int) -> None:
    """With unlimited checks the oracle reads the prompt once and every base token once (kept or rolled back):
    oracle_prefill is exactly that, though the engine re-reads the last settled token before each window."""
    tok = pair.tokenizer
    engine = TorchEngine(pair.base, pair.oracle, tok.eos_token_id, slots=64, max_len=200)
    spec = PolicySpec("judge", k=2, alpha=0.2, every=every, max_c=MAX_TOKENS)
    config = GuidedConfig(spec, SamplingParams(1.0), SamplingParams(1.0), MAX_TOKENS)
    requests = _requests(prompts[:5], config, 4)
    records = engine.run_block(requests)
    assert sum(r.interventions for r in records) > 0 and sum(r.discarded for r in records) > 0
    for record, request in zip(records, requests):
        assert record.oracle_prefill == len(request.prompt_ids) + record.base_decode


def test_judge_is_deterministic_and_stored(tmp_path: Path) -> None:
    experiment = _experiment(configs=[{"policy": "judge", "k": 3, "alpha": 0.1, "every": 8, "max_c": 4}])
    first, second = tmp_path / "a", tmp_path / "b"
    run_experiment(experiment, first, block_size=8, report=lambda _: None)
    run_experiment(experiment, second, block_size=8, report=lambda _: None)
    a, b = _sorted(read_samples(first)), _sorted(read_samples(second))
    pd.testing.assert_frame_equal(a, b)
    assert set(a.config_id) == {"judge-a0.1-k3-e8-m4"} and (a.interventions <= 4).all()
    assert (a.base_decode == a.provenance.map(lambda p: int((np.asarray(p) == 0).sum())) + a.discarded).all()


def test_torch_engine_notes_and_ignores_vllm_engine_options(tmp_path: Path) -> None:
    notes: list[str] = []
    experiment = _experiment(problems=1, n=1, configs=[{"policy": "base"}], engine_options={"dtype": "bfloat16"})
    run_experiment(experiment, tmp_path / "run", block_size=8, report=notes.append)
    assert any("engine_options" in note and "ignores" in note for note in notes)
    assert len(read_samples(tmp_path / "run")) == 1


def test_what_would_fail_later_is_refused_before_the_run_dir_is_written(tmp_path: Path) -> None:
    """A prompt + max_tokens past the models' context, a judge head that does not exist, or one on vLLM:
    refused up front, leaving no run dir behind (a fixed config can then use the same --out)."""
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"max_tokens 400 = \d+ positions, past the base model's context of 320"):
        run_experiment(_experiment(max_tokens=400, configs=[{"policy": "base"}]), run_dir, block_size=8, report=lambda _: None)
    judge = {"policy": "judge", "k": 2, "alpha": 0.2, "max_c": 2, "head": str(tmp_path / "missing.safetensors")}
    with pytest.raises(ValueError, match="judge head .* not found"):
        run_experiment(_experiment(configs=[{"policy": "base"}, judge]), run_dir, block_size=8, report=lambda _: None)
    garbage, headless, folder = tmp_path / "garbage.safetensors", tmp_path / "headless.safetensors", tmp_path / "folder"
    garbage.write_text("garbage")
    from safetensors.torch import save_file
    import torch

    save_file({"bias": torch.tensor(0.0)}, str(headless))
    folder.mkdir()
    for head, why in ((garbage, r"cannot read it as safetensors"), (headless, r"no weight tensor in it"),
                      (folder, r".*folder is not a file")):
        with pytest.raises(ValueError, match=rf"judge head '.*{head.name}': {why}"):
            run_experiment(_experiment(configs=[{**judge, "head": str(head)}]), run_dir, block_size=8, report=lambda _: None)
    with pytest.raises(ValueError, match="the judge head reads the oracle's hidden states"):
        run_experiment(_experiment(engine="vllm", configs=[{**judge, "head": "toy"}]), run_dir, block_size=8,
                       report=lambda _: None)
    assert not (run_dir / "_manifest.json").exists()
    run_experiment(_experiment(problems=1, n=1, configs=[{"policy": "base"}]), run_dir, block_size=8, report=lambda _: None)
    assert len(read_samples(run_dir)) == 1


def test_a_judge_head_is_part_of_the_config_by_its_content(tmp_path: Path) -> None:
    """A run with a judge head records the head's sha256: a retrained head under the same path is refused, the same
    head under another path is accepted; a relative head path is read beside the experiment's TOML."""
    import shutil

    from sampling.config import load_experiment
    from sampling.judge_head import TOY_HEAD, load_head, save_head

    def experiment_file(folder: Path, head: str) -> Path:
        folder.mkdir(exist_ok=True)
        (folder / "judge.toml").write_text(
            'name = "j"\nn = 2\nproblems = 1\nmax_tokens = 24\n[models]\nbase = "toy:base"\noracle = "toy:oracle"\n'
            f'[[configs]]\npolicy = "judge"\nk = 2\nalpha = 0.2\nmax_c = 2\nhead = "{head}"\nid = "jh"\n')
        return folder / "judge.toml"

    toml = experiment_file(tmp_path / "exp", "head.safetensors")
    shutil.copy(TOY_HEAD, tmp_path / "exp" / "head.safetensors")
    experiment = load_experiment(toml)  # read from elsewhere: the head is found beside the TOML
    assert experiment.configs["jh"].policy.head == str(tmp_path / "exp" / "head.safetensors")
    run_dir = tmp_path / "run"
    run_experiment(experiment, run_dir, block_size=8, report=lambda _: None)
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    assert len(manifest["configs"]["jh"]["head_sha256"]) == 64
    shutil.copy(TOY_HEAD, tmp_path / "elsewhere.safetensors")  # the same head under another path: the same config
    moved = load_experiment(experiment_file(tmp_path / "other", str(tmp_path / "elsewhere.safetensors")))
    weight, bias = load_head("toy")
    save_head(tmp_path / "exp" / "head.safetensors", -weight.numpy(), -bias)  # retrained in place
    load_head.cache_clear()
    with pytest.raises(RunDirError, match=r"config 'jh' .* other settings \(head_sha256: "):
        run_experiment(load_experiment(toml), run_dir, block_size=8, report=lambda _: None)
    run_experiment(moved, run_dir, block_size=8, report=lambda _: None)  # accepted: nothing left to sample
    assert len(read_samples(run_dir)) == 2


def test_a_config_with_no_samples_yet_may_be_redefined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config recorded in the run but never sampled (a shard worker with no work for it, or a kill right after the
    manifest update) takes a new definition, with a note; one with samples is still refused. A worker whose config
    is redefined under it while it samples drops the block instead of writing samples of the old definition."""
    from sampling import store as store_module

    run_dir = tmp_path / "run"
    first = {"policy": "margin", "delta": 0.3, "k": 2, "max_c": 2, "id": "m"}
    run_experiment(_experiment(problems=2, n=2, configs=[{"policy": "base"}]), run_dir, block_size=8, report=lambda _: None)
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    recorded = config_manifest(_experiment(problems=2, n=2, configs=[first]))["m"]
    store_module.write_manifest(run_dir, {**manifest, "configs": {**manifest["configs"], "m": recorded}})  # added, never sampled
    notes: list[str] = []
    fixed = _experiment(problems=2, n=2, configs=[{"policy": "base"}, {**first, "k": 3}])
    run_experiment(fixed, run_dir, block_size=8, report=notes.append)
    assert any("config 'm' was defined otherwise" in note and "no samples" in note for note in notes)
    assert json.loads((run_dir / "_manifest.json").read_text())["configs"]["m"]["k"] == 3
    assert set(read_samples(run_dir)["config_id"]) == {"base", "m"}
    with pytest.raises(RunDirError, match=r"config 'm' in .* was sampled with other settings \(k: 3 -> 2\)"):
        run_experiment(_experiment(problems=2, n=2, configs=[first]), run_dir, block_size=8, report=lambda _: None)

    other = tmp_path / "other"
    run_experiment(_experiment(problems=2, n=2, configs=[{"policy": "base"}]), other, block_size=8, report=lambda _: None)
    original_check = store_module.config_definition_changed

    def check_after_redefinition(run_dir, config_id, definition):  # another worker redefines 'm' while this one samples it
        if config_id == "m":
            manifest = json.loads((other / "_manifest.json").read_text())
            manifest["configs"]["m"] = {**manifest["configs"]["m"], "k": 2}
            store_module.write_manifest(other, manifest)
        return original_check(run_dir, config_id, definition)

    monkeypatch.setattr(store_module, "config_definition_changed", check_after_redefinition)  # read after the write
    with pytest.raises(RunDirError, match=r"config 'm' was redefined in .* by another `study sample`"):
        run_experiment(_experiment(problems=2, n=2, configs=[{"policy": "base"}, {**first, "k": 3}]), other, block_size=8,
                       report=lambda _: None)
    assert not store_module.config_has_samples(other, "m")


def test_a_config_with_only_a_killed_workers_temp_file_names_it(tmp_path: Path) -> None:
    """A redefinition refused because of a temp shard (a worker writing, or one killed mid-write) says so."""
    run_dir = tmp_path / "run"
    margin = {"policy": "margin", "delta": 0.3, "k": 2, "max_c": 2, "id": "m"}
    run_experiment(_experiment(problems=1, n=1, configs=[{"policy": "base"}]), run_dir, block_size=8, report=lambda _: None)
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    from sampling import store as store_module

    recorded = config_manifest(_experiment(problems=1, n=1, configs=[margin]))["m"]
    store_module.write_manifest(run_dir, {**manifest, "configs": {**manifest["configs"], "m": recorded}})
    (run_dir / "samples" / "m").mkdir()
    (run_dir / "samples" / "m" / ".tmp-0a1b-g00000-c000.parquet").write_bytes(b"PAR1")
    with pytest.raises(RunDirError, match=r"config 'm' .* other settings \(k: 2 -> 3; its only files are unfinished ones "
                                          r"\(.tmp-0a1b-g00000-c000.parquet\).*remove them"):
        run_experiment(_experiment(problems=1, n=1, configs=[{**margin, "k": 3}]), run_dir, block_size=8,
                       report=lambda _: None)


def test_grades_of_a_redefined_configs_old_samples_are_refused(tmp_path: Path) -> None:
    """A graded config whose shards are removed and which is then sampled under a new definition (same sample keys)
    does not keep its old samples' grades: verify refuses them until --regrade, which grades the new samples."""
    import shutil

    import verify

    run_dir = tmp_path / "run"
    run_experiment(_experiment(problems=2, n=2, configs=[{"policy": "base"}, {"policy": "oracle"}]), run_dir,
                   block_size=8, report=lambda _: None)
    verify.grade_run(run_dir, progress=False)
    shutil.rmtree(run_dir / "samples" / "base")
    notes: list[str] = []
    redefined = _experiment(problems=2, n=2, max_tokens=6, configs=[{"policy": "base"}])
    run_experiment(redefined, run_dir, shard=(1, 2), block_size=8, report=notes.append)  # a shard with no work
    assert any("config 'base' was defined otherwise" in note and "--regrade" in note for note in notes)
    assert set(verify.grade_run(run_dir, progress=False)["config_id"]) == {"oracle"}  # no base sample: nothing stale read
    run_experiment(redefined, run_dir, shard=(0, 2), block_size=8, report=notes.append)
    with pytest.raises(RunDirError, match=r"config\(s\) 'base' were redefined after their samples were graded .*--regrade"):
        verify.grade_run(run_dir, progress=False)
    grades = verify.grade_run(run_dir, progress=False, regrade=True)
    samples = read_samples(run_dir)
    base = samples[samples.config_id == "base"]
    assert (base["base_decode"] <= 6).all() and not base["text"].str.contains("boxed").any()  # cut short: no answer
    assert grades[grades.config_id == "base"]["extracted"].isna().all()
    assert len(verify.grade_run(run_dir, progress=False)) == len(samples)  # the record is current again


def test_a_removed_shard_sampled_again_keeps_its_grades_only_if_its_texts_are_the_same(tmp_path: Path) -> None:
    """A damaged shard removed and sampled again: the torch engine writes the same samples (same texts digest), so
    their grades stand; a shard whose new samples differ (as a GPU engine's may) has them graded again."""
    import pyarrow.parquet as pq

    import verify
    from sampling import store as store_module
    from sampling.records import SampleRecord
    from verify.run_grades import grade_run_with_stats

    run_dir = tmp_path / "run"
    experiment = _experiment(problems=2, n=2, configs=[{"policy": "base"}])
    run_experiment(experiment, run_dir, block_size=8, report=lambda _: None)
    first = verify.grade_run(run_dir, progress=False)
    shard = next((run_dir / "samples" / "base").glob("*.parquet"))
    digest = store_module.footer_texts_digest(pq.read_schema(shard).metadata)
    assert digest == store_module.texts_digest(pq.read_table(shard))
    shard.unlink()
    run_experiment(experiment, run_dir, block_size=8, report=lambda _: None)
    assert store_module.footer_texts_digest(pq.read_schema(shard).metadata) == digest
    grades, stats = grade_run_with_stats(run_dir, progress=False)
    assert (stats.replaced_shards, stats.newly_graded) == (0, 0)
    pd.testing.assert_frame_equal(grades, first)
    records = [SampleRecord(**row) for row in pq.read_table(shard).to_pylist()]
    records[0].text = "So the answer is \\boxed{-1}."
    shard.unlink()
    store_module.write_shard(run_dir, "base", shard.stem, records)
    grades, stats = grade_run_with_stats(run_dir, progress=False)
    assert stats.replaced_shards == 1 and stats.newly_graded == len(records)
    changed = grades.set_index(["problem_id", "sample_index"]).loc[(records[0].problem_id, records[0].sample_index)]
    assert changed["extracted"] == "-1" and not changed["correct"]


def test_grades_from_before_definitions_were_recorded_get_them_on_the_next_grading(tmp_path: Path) -> None:
    """A run graded by an older study (no definitions recorded) records today's definitions of its graded configs
    the next time grading writes anything, so a later redefinition is caught there too."""
    import shutil

    import pyarrow.parquet as pq

    import verify
    from verify.run_grades import _cache_path

    run_dir = tmp_path / "run"
    run_experiment(_experiment(problems=2, n=2, configs=[{"policy": "base"}]), run_dir, block_size=8,
                   report=lambda _: None)
    verify.grade_run(run_dir, progress=False)
    references = _cache_path(run_dir, "math-verify", "references")
    table = pq.read_table(references)
    pq.write_table(table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items()
                                                  if k != b"study.config_definitions"}), references)
    run_experiment(_experiment(problems=2, n=2, configs=[{"policy": "base"}, {"policy": "oracle"}]), run_dir,
                   block_size=8, report=lambda _: None)
    verify.grade_run(run_dir, progress=False)  # grades the oracle's samples, records base's definition too
    assert set(json.loads(pq.read_schema(references).metadata[b"study.config_definitions"])) == {"base", "oracle"}
    shutil.rmtree(run_dir / "samples" / "base")
    run_experiment(_experiment(problems=2, n=2, max_tokens=6, configs=[{"policy": "base"}]), run_dir, block_size=8,
                   report=lambda _: None)
    with pytest.raises(RunDirError, match=r"config\(s\) 'base' were redefined"):
        verify.grade_run(run_dir, progress=False)


def test_a_models_end_of_sequence_ids_are_part_of_the_run(tmp_path: Path) -> None:
    """generation_config.json's end ids (not in the weights' sha256) are recorded: a run continued with other ids
    is refused; a run recorded before they were (no stop_ids) continues."""
    import shutil

    from sampling.models import TOY_MODELS_DIR

    base = tmp_path / "base"
    shutil.copytree(TOY_MODELS_DIR / "base", base)
    experiment = _experiment(problems=1, n=2, configs=[{"policy": "base"}], models={"base": str(base), "oracle": "toy:oracle"})
    run_dir = tmp_path / "run"
    run_experiment(experiment, run_dir, block_size=8, report=lambda _: None)
    manifest = json.loads((run_dir / "_manifest.json").read_text())
    assert manifest["models"]["base"]["stop_ids"] == [2]
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    del manifest["models"]["base"]["stop_ids"]
    (older / "_manifest.json").write_text(json.dumps(manifest))
    config = json.loads((base / "generation_config.json").read_text())
    (base / "generation_config.json").write_text(json.dumps({**config, "eos_token_id": [2, 3]}))
    with pytest.raises(RunDirError, match=r"(?s)different 'models'.*\[2, 3\]"):
        run_experiment(experiment, run_dir, block_size=8, report=lambda _: None)
    run_experiment(experiment, older, block_size=8, report=lambda _: None)  # nothing recorded to compare with


def test_an_engine_that_fails_to_start_leaves_no_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine starts before the manifest is written: a start that fails does not lock the --out folder."""
    import sampling.runner as runner

    def broken(*args, **kwargs):
        raise ValueError("engine could not start")

    monkeypatch.setattr(runner, "make_engine", broken)
    with pytest.raises(ValueError, match="could not start"):
        run_experiment(_experiment(problems=1, n=1, configs=[{"policy": "base"}]), tmp_path / "run", block_size=8,
                       report=lambda _: None)
    assert not (tmp_path / "run" / "_manifest.json").exists()


def test_prompts_with_unknown_characters_are_reported(tmp_path: Path) -> None:
    """Characters the tokenizer maps to <unk> are said, not silently sampled from."""
    data = tmp_path / "odd.jsonl"
    data.write_text(json.dumps({"id": "q1", "problem": "Compute $1+2$ \u2019", "answer": "3"}) + "\n"
                    + json.dumps({"id": "q2", "problem": "Compute $1+2$", "answer": "3"}) + "\n")
    notes: list[str] = []
    run_experiment(_experiment(dataset=str(data), problems=2, n=1, configs=[{"policy": "base"}]), tmp_path / "run",
                   block_size=8, report=notes.append)
    assert any("1 of 2 prompts contain characters the tokenizer does not know" in note and "q1" in note for note in notes)


def test_a_relative_dataset_path_is_found_beside_the_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dataset = "data.jsonl" in a TOML elsewhere reads the file beside the TOML; a missing one says where it looked."""
    from sampling.config import load_experiment
    from sampling.datasets import DatasetError, load_problems

    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "data.jsonl").write_text(json.dumps({"id": "q1", "problem": "Compute $1+2$", "answer": "3"}) + "\n")
    (folder / "e.toml").write_text('dataset = "data.jsonl"\nn = 1\nmax_tokens = 8\n[models]\nbase = "toy:base"\n'
                                   '[[configs]]\npolicy = "base"\n')
    monkeypatch.chdir(tmp_path)
    experiment = load_experiment(folder / "e.toml")
    assert Path(experiment.dataset) == folder / "data.jsonl"
    assert [p.id for p in load_problems(experiment.dataset)] == ["q1"]
    run = tmp_path / "run"  # the same file reached by another path continues the run
    run_experiment(experiment, run, block_size=8, report=lambda _: None)
    monkeypatch.chdir(folder)
    again = load_experiment(Path("e.toml"))
    assert again.dataset == "data.jsonl"
    run_experiment(again, run, block_size=8, report=lambda _: None)
    assert len(read_samples(run)) == 1
    with pytest.raises(DatasetError, match=r"dataset file not found: gone.jsonl \(looked at .*gone.jsonl\)"):
        load_problems("gone.jsonl")


def test_per_config_temperatures_get_their_own_ids() -> None:
    experiment = _experiment(configs=[{"policy": "oracle"}, {"policy": "oracle", "oracle_temperature": 0},
                                      {"policy": "random", "c": 2, "k": 3, "oracle_temperature": [0, 0.6]}])
    assert list(experiment.configs) == ["oracle", "oracle-ot0", "random-c2-k3-ot0", "random-c2-k3-ot0.6"]
    assert experiment.configs["oracle-ot0"].oracle.temperature == 0.0


def test_a_block_another_worker_wrote_meanwhile_is_kept_not_overwritten(reference_run: Path, tmp_path: Path, monkeypatch) -> None:
    """Two workers on one shard: a block the other wrote while this one sampled it is kept (grades made from
    it stay right, even where a GPU's samples differ run to run); this one's copy is dropped, and the run says so."""
    import copy

    from sampling import store

    write = store.write_shard
    first: list[str] = []

    def other_worker_first(run_dir, config_id, block_key, records, **timing):
        if not first:  # the other worker finishes this block a moment earlier, with other samples
            first.append(f"{config_id}/{block_key}")
            theirs = [copy.copy(r) for r in records]
            for record in theirs:
                record.text = "the other worker's sample"
            assert write(run_dir, config_id, block_key, theirs, **timing)
        return write(run_dir, config_id, block_key, records, **timing)

    monkeypatch.setattr(store, "write_shard", other_worker_first)
    notes: list[str] = []
    result = run_experiment(_experiment(), tmp_path / "twice", block_size=8, report=notes.append)
    samples = read_samples(tmp_path / "twice")
    config_id, _ = first[0].split("/", 1)
    theirs = samples[samples["text"] == "the other worker's sample"]
    assert len(theirs) > 0 and set(theirs["config_id"]) == {config_id}
    assert any(f"block {first[0]} was written by another process" in note for note in notes)
    assert len(samples) == len(read_samples(reference_run)) and result.samples_written == len(samples) - len(theirs)
    assert result.blocks_skipped == 1 and result.blocks_done == len(list((reference_run / "samples").glob("*/*.parquet"))) - 1
    assert not list((tmp_path / "twice").rglob(".tmp-*"))


def test_blocks_another_worker_finished_meanwhile_are_skipped(reference_run: Path, tmp_path: Path, monkeypatch) -> None:
    """Two workers on one shard at different speeds: a block the other one finished while this one ran is not
    sampled again here (no engine time spent on it), and the run says how many it skipped."""
    import shutil

    from sampling import store

    write = store.write_shard
    ahead: list[Path] = []

    def other_worker_ahead(run_dir, config_id, block_key, records, **timing):
        placed = write(run_dir, config_id, block_key, records, **timing)
        if not ahead:  # after this worker's first block, the other one has finished two later blocks
            for source in sorted((reference_run / "samples").glob("*/*.parquet"))[-2:]:
                target = Path(run_dir) / "samples" / source.parent.name / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                ahead.append(target)
        return placed

    monkeypatch.setattr(store, "write_shard", other_worker_ahead)
    notes: list[str] = []
    result = run_experiment(_experiment(), tmp_path / "ahead", block_size=8, report=notes.append)
    blocks = len(list((reference_run / "samples").glob("*/*.parquet")))
    assert result.blocks_done == blocks - 2 and result.blocks_skipped == 2
    assert any("2 block(s) of this shard were written by another process" in note for note in notes)
    pd.testing.assert_frame_equal(_sorted(read_samples(reference_run)), _sorted(read_samples(tmp_path / "ahead")))


@pytest.mark.parametrize("text", ["", "1", "a/b", "3/3", "-1/2", "1/0"])
def test_bad_shard_specs_are_refused(text: str) -> None:
    """--shard must be i/N with 0 <= i < N; an empty value (an unset variable in a job script) is refused, not
    taken as the whole run."""
    from sampling.runner import parse_shard

    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)
    assert parse_shard(None) == (0, 1) and parse_shard("2/8") == (2, 8)


def test_a_damaged_shard_or_problems_file_is_named(reference_run: Path, tmp_path: Path) -> None:
    """A shard or problems file damaged by something else: reading the run names the file and what to do."""
    import shutil

    from sampling.store import read_problems, shard_timings

    run_dir = tmp_path / "damaged"
    shutil.copytree(reference_run, run_dir)
    shard = sorted((run_dir / "samples" / "oracle").glob("*.parquet"))[0]
    shard.write_bytes(b"not parquet")
    for read in (read_samples, lambda r: list(shard_timings(r))):
        with pytest.raises(RunDirError, match=rf"{shard.name}: unreadable samples shard .* Remove it and run the same"):
            read(run_dir)
    (run_dir / "_problems.parquet").write_bytes(b"")
    with pytest.raises(RunDirError, match=r"_problems.parquet: unreadable"):
        read_problems(run_dir)


def test_a_removed_problems_file_is_written_again_by_the_same_command(reference_run: Path, tmp_path: Path) -> None:
    """The advice for a damaged problems file (remove it, run `study sample` again) restores it, also when every
    block is done; grading reads the run again."""
    import shutil

    from sampling.store import read_problems
    from verify import grade_run

    run_dir = tmp_path / "restored"
    shutil.copytree(reference_run, run_dir)
    expected = read_problems(run_dir)
    (run_dir / "_problems.parquet").unlink()
    with pytest.raises(RunDirError, match=r"missing _problems.parquet; `study sample` with the run's experiment writes it again"):
        read_problems(run_dir)
    notes: list[str] = []
    result = run_experiment(_experiment(), run_dir, block_size=8, report=notes.append)
    assert result.samples_written == 0 and read_problems(run_dir) == expected
    assert any("_problems.parquet again (it was missing)" in note for note in notes)
    assert len(grade_run(run_dir, progress=False)) == len(read_samples(run_dir))


def test_grid_ids_stay_distinct_and_integers_are_integers() -> None:
    """A grid over ref_length puts it in the ids (one value keeps the usual id); an integral float such as
    max_c = 3.0 is the integer 3, in the policy and in the id."""
    configs = _experiment(configs=[{"policy": "random", "c": 2, "k": 2, "ref_length": [10, 50]},
                                   {"policy": "random", "c": 1, "k": 2, "ref_length": 50},
                                   {"policy": "entropy", "tau": 0.3, "k": 2, "max_c": 3.0}]).configs
    assert list(configs) == ["random-c2-k2-r10", "random-c2-k2-r50", "random-c1-k2", "entropy-t0.3-k2-m3"]
    assert configs["entropy-t0.3-k2-m3"].policy.max_c == 3 and isinstance(configs["entropy-t0.3-k2-m3"].policy.max_c, int)
