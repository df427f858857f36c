"""A linear "important mistake" head on the oracle's final hidden states (the learned judge)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sampling.models import readable_as_umask

TOY_HEAD = Path(__file__).resolve().parent.parent / "experiments" / "toy" / "models" / "judge_head.safetensors"


def resolve_head(name: str) -> Path:
    """"toy" -> the shipped toy head; anything else is a path."""
    path = TOY_HEAD if name == "toy" else Path(name)
    if not path.exists():
        raise ValueError(f"judge head {name!r} not found at {path} (train one with `study toy train-judge`)")
    if not path.is_file():
        raise ValueError(f"judge head {name!r}: {path} is not a file (a head is one .safetensors file)")
    return path


@lru_cache(maxsize=8)
def load_head(name: str) -> tuple[torch.Tensor, float]:
    """(weight [hidden], bias) of a saved head."""
    path = resolve_head(name)
    where = f"judge head {name!r}" + ("" if str(path) == name else f" ({path})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{where}: cannot read it as safetensors ({exc})") from None
    missing = [key for key in ("weight", "bias") if key not in tensors]
    if missing:
        raise ValueError(f"{where}: no {' or '.join(missing)} tensor in it (a head saved by `study toy train-judge` has both)")
    return tensors["weight"].float(), float(tensors["bias"])


def save_head(path: Path, weight: np.ndarray, bias: float) -> None:
    """Write a head as safetensors, readable as the umask allows (so other users' workers can load it)."""
    save_file({"weight": torch.as_tensor(weight, dtype=torch.float32).contiguous(),
               "bias": torch.tensor(float(bias), dtype=torch.float32)}, str(path))
    readable_as_umask(Path(path))


def mistake_probability(hidden: torch.Tensor, name: str) -> np.ndarray:
    """Sigmoid(w · h + b) for hidden states [n, hidden]."""
    weight, bias = load_head(name)
    if hidden.shape[-1] != weight.shape[0]:
        raise ValueError(f"judge head {name!r} expects hidden size {weight.shape[0]}, the oracle has {hidden.shape[-1]}")
    return torch.sigmoid(hidden.float() @ weight + bias).numpy()
