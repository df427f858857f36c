"""Resolving, loading and fingerprinting the base/oracle models and their shared tokenizer."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOY_MODELS_DIR = Path(__file__).resolve().parent.parent / "experiments" / "toy" / "models"


class ModelError(ValueError):
    """A model or tokenizer that cannot be used."""


def resolve_model(name: str) -> str:
    """`toy:base` / `toy:oracle` -> the shipped folder; a local folder stays; anything else is a hub id."""
    if name.startswith("toy:"):
        path = TOY_MODELS_DIR / name.removeprefix("toy:")
        if not (path / "config.json").exists():
            raise ModelError(f"toy model {name!r} not found at {path} (train it with `study toy train`)")
        return str(path)
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or Path(name).exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise ModelError(f"model folder not found: {name} (looked at {Path(name).expanduser().resolve()}); "
                         "a hub id looks like org/name")
    return str(Path(name).expanduser().resolve()) if looks_local else name  # absolute: the run records where it was


def fingerprint(name_or_path: str) -> str:
    """sha256 over a local model's config and weight files; for a hub id, the id itself (pin a revision)."""
    path = Path(name_or_path)
    if not path.is_dir():
        return f"hub:{name_or_path}"
    files = [file for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + [path / "config.json"]
             if file.exists()]
    return _files_digest(tuple((file.name, str(file.resolve()), _identity(file.stat())) for file in files))


def readable_as_umask(path: Path) -> None:
    """Give a model or head file the permissions a plain open() would (0666 less the umask), so other users' workers
    can load it: safetensors writes its files 0600."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is rewritten: inode, size, modification and status-change times."""
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


@functools.lru_cache(maxsize=16)
def _files_digest(files: tuple[tuple[str, str, tuple[int, ...]], ...]) -> str:
    """sha256 over each (name, file)'s name and content, remembered by the file's path and identity (`_identity`): a
    large checkpoint is read once per process (`study analyze` checks a folder, then loads it)."""
    digest = hashlib.sha256()
    for name, file, _ in files:
        digest.update(name.encode())
        with open(file, "rb") as handle:  # in chunks: a checkpoint file can be larger than memory
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def tokenizer_signature(tokenizer: Any) -> str:
    """What must match for two models to share token ids: vocab and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    specials = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    return hashlib.sha256(json.dumps([vocab, specials]).encode()).hexdigest()


def check_same_tokenizer(base_tokenizer: Any, oracle_tokenizer: Any, base_name: str, oracle_name: str) -> None:
    """Refuse a base/oracle pair whose tokenizers differ (token ids could not pass exactly)."""
    if tokenizer_signature(base_tokenizer) != tokenizer_signature(oracle_tokenizer):
        base_vocab, oracle_vocab = base_tokenizer.get_vocab(), oracle_tokenizer.get_vocab()
        differing = sorted(set(base_vocab.items()) ^ set(oracle_vocab.items()))[:5]
        base_special, oracle_special = (dict(t.special_tokens_map) for t in (base_tokenizer, oracle_tokenizer))
        specials = {k: (base_special.get(k), oracle_special.get(k)) for k in sorted(set(base_special) | set(oracle_special))
                    if base_special.get(k) != oracle_special.get(k)}
        what = (f"vocab sizes {len(base_vocab)} vs {len(oracle_vocab)}; e.g. {differing}" if differing
                else f"special tokens (base, oracle): {specials}")
        raise ModelError(
            f"base {base_name!r} and oracle {oracle_name!r} have different tokenizers ({what}); "
            "guided decoding passes token ids between them, so they must share one tokenizer"
        )


def stop_ids(model_path: str, tokenizer: Any) -> set[int]:
    """End-of-sequence ids: the tokenizer's plus the model's generation_config (Llama 3 Instruct lists three)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        from transformers import GenerationConfig

        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):
        configured = None
    if configured is not None:
        ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {int(i) for i in ids}


@dataclass
class LoadedPair:
    """Base (and optional oracle) HF models with their shared tokenizer and manifest entries."""

    base: Any
    oracle: Any | None
    tokenizer: Any
    manifest: dict[str, dict[str, Any]]


def load_pair(base_name: str, oracle_name: str | None, dtype: str = "float32", weights: bool = True) -> LoadedPair:
    """Load both models on CPU (torch engine), checking that they share a tokenizer.

    With weights=False the models are built on the meta device (parameter counts and config only,
    no memory): what the vLLM engine needs, since vLLM loads the weights itself.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    entries: dict[str, dict[str, Any]] = {}
    loaded: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    for role, name in (("base", base_name), ("oracle", oracle_name)):
        if name is None:
            continue
        path = resolve_model(name)
        try:
            tokenizers[role] = AutoTokenizer.from_pretrained(path)
            if weights:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
            else:
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch_dtype)
        except OSError as exc:
            raise ModelError(f"cannot load {role} model {name!r}: {exc}") from None
        loaded[role] = model.eval()
        entries[role] = {
            "name": name, "path": path, "sha256": fingerprint(path),
            "n_params": sum(p.numel() for p in model.parameters()),
            "n_params_non_embedding": sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n),
        }
        if role == "base":  # where both engines stop: the tokenizer's and the base's generation_config.json end ids
            entries[role]["stop_ids"] = sorted(stop_ids(path, tokenizers[role]))  # (not in the sha256 above)
    if oracle_name is not None:
        check_same_tokenizer(tokenizers["base"], tokenizers["oracle"], base_name, oracle_name)
    return LoadedPair(loaded["base"], loaded.get("oracle"), tokenizers["base"], entries)
