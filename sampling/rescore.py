"""Teacher-forced per-token statistics of a model on given token ids (for signal analysis)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenStats:
    """Per generated position: the model's next-token distribution and the token actually written."""

    entropy: np.ndarray  # nats, full distribution at T = 1
    top1: np.ndarray  # probability of the most likely token
    margin: np.ndarray  # top-1 minus top-2 probability
    token_prob: np.ndarray  # probability the model gave the token that was written
    hidden: np.ndarray  # final-norm hidden state after reading each written token [n, hidden]


@torch.no_grad()
def token_statistics(model: torch.nn.Module, prompt_ids: list[int], generated_ids: list[int]) -> TokenStats:
    """Score `generated_ids` after `prompt_ids` in one forward pass."""
    ids = torch.tensor([list(prompt_ids) + list(generated_ids)])
    out = model(input_ids=ids, output_hidden_states=True)
    logits = out.logits[0, len(prompt_ids) - 1 : -1].double()
    hidden = out.hidden_states[-1][0, len(prompt_ids) :].float()
    logp = torch.log_softmax(logits, dim=-1)
    probs = logp.exp()
    top2 = probs.topk(2, dim=-1).values
    chosen = probs.gather(1, torch.tensor(generated_ids)[:, None])[:, 0]
    return TokenStats(
        entropy=(-(probs * logp).nan_to_num().sum(-1)).numpy(),
        top1=top2[:, 0].numpy(),
        margin=(top2[:, 0] - top2[:, 1]).numpy(),
        token_prob=chosen.numpy(),
        hidden=hidden.numpy(),
    )
