"""What every runtime checks before a request joins its batch: token ids the model can take, and a
prompt plus answer that fits the context (a default `max_new_tokens` shrinks to fit instead); and the
seats background work (priority > 0, e.g. batch lines) leaves free for interactive arrivals."""

from __future__ import annotations

import dataclasses

from engine.config import SamplingParams
from engine.errors import InvalidPrompt, PromptTooLong


def admit(ids: list[int], params: SamplingParams, *, vocab_size: int, limit: int,
          cache_limited: bool) -> SamplingParams:
    """The checks of every runtime's `generate`, in order: a prompt at all, ids the model takes, a fit."""
    if not ids:
        raise ValueError("the prompt is empty")
    check_ids(ids, vocab_size)
    return fit(len(ids), params, limit, cache_limited=cache_limited)


def background_reserve(max_num_seqs: int) -> int:
    """Seats background work never takes, so an interactive arrival finds one without waiting or
    preempting: an eighth of them, at least one (none on a one-seat engine)."""
    return max(1, max_num_seqs // 8) if max_num_seqs > 1 else 0


def check_ids(ids: list[int], vocab_size: int) -> None:
    for i, t in enumerate(ids):
        if not 0 <= t < vocab_size:
            raise InvalidPrompt(f"token id {t} at position {i} is outside this model's vocabulary "
                                f"(ids 0 to {vocab_size - 1}); send ids from the model's own tokenizer")


def fit(num_prompt: int, params: SamplingParams, limit: int, *, cache_limited: bool) -> SamplingParams:
    """`params` with max_new_tokens within a context of `limit` tokens; a request that cannot fit is refused."""
    why = " (all the KV cache holds for one sequence)" if cache_limited else ""
    if num_prompt >= limit:
        raise PromptTooLong(f"the prompt has {num_prompt} tokens but the context window is {limit}{why}, "
                            "including at least one new token; shorten the prompt")
    room = limit - num_prompt
    if params.max_new_tokens <= room:
        return params
    if params.fit_context:
        return dataclasses.replace(params, max_new_tokens=room)
    raise PromptTooLong(f"the prompt has {num_prompt} tokens and max_tokens asks for {params.max_new_tokens} "
                        f"more, {num_prompt + params.max_new_tokens} in all, but the context window is "
                        f"{limit}{why}; ask for at most {room} new tokens or shorten the prompt", param="max_tokens")
