"""A Hugging Face decoder run by our own batched KV-cache loop (gpt-fast style).

Each cache slot holds one sequence; a slot knows how many of its tokens are already in the cache,
so a call passes only the tokens the model has not seen (one token when decoding, many when catching
up on what the other model wrote). Rows in one call may sit at different positions. The projection,
norm and MLP modules are the HF model's own; only attention with the cache is written here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF's rotate_half for rotary embeddings."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _sliding_window(attention: torch.nn.Module, config) -> int | None:
    """The layer's attention window in tokens (a key is seen while query - key < window), None if it sees all."""
    window = getattr(attention, "sliding_window", getattr(config, "sliding_window", None))
    return int(window) if window else None


def _masked_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA of q [b, H, L, D] over keys/values [b, Hkv, T, D] (strided views are fine) with a bool mask [b, 1, L, T]."""
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=keys.shape[1] != q.shape[1])


class KVModel:
    """An HF causal LM plus a slot-indexed KV cache."""

    def __init__(self, model: torch.nn.Module, slots: int, max_len: int) -> None:
        config = model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"torch engine supports model types {', '.join(SUPPORTED_MODEL_TYPES)}, not {config.model_type!r}"
            )
        self.model = model.eval()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.max_len = max_len
        self.slots = slots
        dtype = next(model.parameters()).dtype
        shape = (slots, self.num_kv_heads, max_len, self.head_dim)
        layers = model.model.layers
        self.k_cache = [torch.zeros(shape, dtype=dtype) for _ in layers]
        self.v_cache = [torch.zeros(shape, dtype=dtype) for _ in layers]
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.filled = np.zeros(slots, dtype=np.int64)
        self.windows = [_sliding_window(layer.self_attn, config) for layer in layers]

    @property
    def n_params(self) -> int:
        """Parameter count (embeddings included, tied weights once)."""
        return sum(p.numel() for p in self.model.parameters())

    def reset(self, slots: list[int]) -> None:
        """Forget the sequences in these slots."""
        self.filled[slots] = 0

    def copy_prefix(self, source: int, targets: list[int], length: int) -> None:
        """Give slots `targets` the first `length` cached tokens of slot `source` (shared prompts)."""
        if not targets:
            return
        index = torch.as_tensor(targets)
        for cache in (*self.k_cache, *self.v_cache):
            cache[index, :, :length] = cache[source, :, :length]
        self.filled[targets] = length

    def move(self, source: int, target: int) -> None:
        """Move the sequence cached in slot `source` to slot `target` (compaction)."""
        length = int(self.filled[source])
        for cache in (*self.k_cache, *self.v_cache):
            cache[target, :, :length] = cache[source, :, :length]
        self.filled[target], self.filled[source] = length, 0

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of shape [b, 1, L, D] for integer positions [b, L]."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        dtype = self.k_cache[0].dtype
        return (emb.cos() * self.rope_scale).to(dtype), (emb.sin() * self.rope_scale).to(dtype)

    def _attend(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_index: torch.Tensor, total: int, mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention of the rows' queries [b, H, L, D] over their cached keys.

        When the rows fill most of a slot range, attend over a strided view of that range (no copy)
        with idle rows masked to their first key; otherwise gather the rows' caches.
        """
        low, high = int(slot_index.min()), int(slot_index.max()) + 1
        if 2 * len(slot_index) < high - low:
            return _masked_attention(q, k_cache[slot_index, :, :total], v_cache[slot_index, :, :total], mask)
        local = slot_index - low
        span = high - low
        if span == len(slot_index) and bool((local == torch.arange(span)).all()):
            return _masked_attention(q, k_cache[low:high, :, :total], v_cache[low:high, :, :total], mask)
        q_span = q.new_zeros((span, *q.shape[1:]))
        q_span[local] = q
        mask_span = torch.zeros((span, *mask.shape[1:]), dtype=torch.bool)
        mask_span[..., 0] = True
        mask_span[local] = mask
        return _masked_attention(q_span, k_cache[low:high, :, :total], v_cache[low:high, :, :total], mask_span)[local]

    @torch.no_grad()
    def forward(
        self, slots: list[int], chunks: list[list[int]], every_position: bool = False, hidden_out: list | None = None
    ) -> torch.Tensor:
        """Append each chunk to its slot's sequence; return logits [len(slots), vocab] after its last token.

        With every_position, logits after every chunk token: [len(slots), longest chunk, vocab]
        (positions past a row's chunk are padding); `hidden_out`, if given, receives the final-norm
        hidden states [len(slots), longest chunk, hidden] (what the LM head reads).
        """
        lengths = np.array([len(c) for c in chunks], dtype=np.int64)
        if (lengths == 0).any():
            raise ValueError("every row needs at least one new token")
        start = self.filled[slots]
        if (start + lengths > self.max_len).any():
            raise ValueError(f"sequence longer than the cache ({self.max_len} tokens)")
        width = int(lengths.max())
        batch = len(slots)
        ids = torch.zeros((batch, width), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk)] = torch.as_tensor(chunk)
        offsets = torch.arange(width)
        positions = torch.as_tensor(start)[:, None] + offsets[None, :]
        valid = offsets[None, :] < torch.as_tensor(lengths)[:, None]
        total = int((start + lengths).max())
        slot_index = torch.as_tensor(slots)
        write_rows, write_cols = valid.nonzero(as_tuple=True)
        write_slots, write_pos = slot_index[write_rows], positions[write_rows, write_cols]
        key_pos = torch.arange(total)
        causal = key_pos[None, None, None, :] <= positions[:, None, :, None]
        windowed = {w: causal & (key_pos[None, None, None, :] > positions[:, None, :, None] - w)
                    for w in set(self.windows) if w is not None}
        cos, sin = self._rope(positions)

        hidden = self.model.model.embed_tokens(ids)
        for layer, k_cache, v_cache, window in zip(self.model.model.layers, self.k_cache, self.v_cache, self.windows):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(batch, width, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(batch, width, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(batch, width, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k_cache[write_slots, :, write_pos] = k[write_rows, :, write_cols]
            v_cache[write_slots, :, write_pos] = v[write_rows, :, write_cols]
            mask = causal if window is None else windowed[window]
            out = self._attend(q, k_cache, v_cache, slot_index, total, mask)
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch, width, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        if every_position:
            normed = self.model.model.norm(hidden)
            if hidden_out is not None:
                hidden_out.append(normed.float())
            logits = self.model.lm_head(normed)
        else:
            last = hidden[torch.arange(batch), torch.as_tensor(lengths - 1)]
            logits = self.model.lm_head(self.model.model.norm(last))
        self.filled[slots] = start + lengths
        return logits.float()
