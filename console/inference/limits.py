"""Rate limits for inference: requests and tokens per minute, per budget.

A budget is a user's (shared by all their API keys and their browser session), or a key's own when an
admin gave that key its own limits (`ApiKey.own_limits`). Tokens are *reserved* when a request is
admitted, for the most it can use: an upper bound of its prompt plus `max_tokens × n`; a request whose
reservation does not fit what is left of the minute's budget is refused with 429 and `Retry-After`.
When the request ends, the reservation is *settled*: the difference to what it really used is given
back (all of it when it failed or was cancelled before its first token). The check and the reservation
are one Lua script in Redis, so concurrent requests cannot all pass a check that only one of them fits.

The web process has no tokenizer loaded (and never loads torch), so the prompt's bound is its UTF-8
length in bytes plus a margin per message and per request for the chat template's own tokens: a
byte-level BPE token covers at least one byte, so this is never below the real count for the models
we serve, only looser (settling gives the difference back)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from console.inference.errors import ApiError
from console.inference.gateway import redis_client

WINDOW_S = 60
KEY_TTL_S = 120  # a minute's counters outlive it, so a late settle still finds them
PER_REQUEST_MARGIN = 32  # the chat template's tokens around the messages (a default system prompt, BOS, ...)
PER_MESSAGE_MARGIN = 8  # role markers and separators of one message
PER_ITEM_MARGIN = 4  # [CLS]/[SEP]-style tokens around each text of an embeddings / predict request

# KEYS: the minute's request counter, its token counter. ARGV: requests/min, tokens/min (0: none), tokens
# to reserve, TTL. Returns {0, used}: admitted (reserved); {1, count}: over the requests; {2, used}: the
# reservation does not fit the tokens left.
RESERVE = """
local rpm, tpm, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if rpm > 0 and count >= rpm then return {1, count} end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if tpm > 0 and used + want > tpm then return {2, used} end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if tpm > 0 and want > 0 then
  redis.call('INCRBY', KEYS[2], want)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {0, used}
"""

# Add ARGV[1] (negative: tokens given back) to the counter the reservation was made on, if it still exists.
SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 0
"""


@dataclass(slots=True)
class Budget:
    """Whose minute a request counts against, and its limits (0: unlimited)."""

    bucket: str  # "user:<id>" or "key:<hash prefix>" (a pk can come back after a key is deleted; its hash cannot)
    requests_per_minute: int
    tokens_per_minute: int
    own: bool = False  # a key's own budget rather than its user's

    @property
    def whose(self) -> str:
        return "this key" if self.own else "your account (all your keys and the browser share it)"


@dataclass(slots=True)
class Ticket:
    """A reservation: what was reserved, on which minute's counter, and the prompt's share of it."""

    budget: Budget
    counter: str
    reserved: int
    prompt_bound: int
    settled: bool = False


def _window() -> tuple[int, int]:
    now = time.time()
    return int(now // WINDOW_S), max(1, int(WINDOW_S - now % WINDOW_S))


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def prompt_bound(work: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens of a worker request (see the module's docstring)."""
    if work["kind"] != "generate":
        return sum(_bytes(t) + PER_ITEM_MARGIN for t in work["input"])
    prompt = work["prompt"]
    if isinstance(prompt, str):
        return _bytes(prompt) + PER_REQUEST_MARGIN
    if prompt and isinstance(prompt[0], int):  # token ids: exactly these
        return len(prompt)
    return PER_REQUEST_MARGIN + sum(_bytes(m["content"]) + _bytes(m["role"]) + PER_MESSAGE_MARGIN for m in prompt)


def reservation(work: dict[str, Any]) -> tuple[int, int]:
    """(tokens to reserve, the prompt's bound): prompt bound + max_tokens × n for a generation."""
    bound = prompt_bound(work)
    if work["kind"] != "generate":
        return bound, bound
    return bound + int(work["params"]["max_new_tokens"]) * int(work.get("n", 1)), bound


async def reserve(budget: Budget, work: dict[str, Any]) -> Ticket:
    """Admit the request against the budget's minute and reserve its tokens, or raise 429 (Retry-After)."""
    rpm, tpm = budget.requests_per_minute, budget.tokens_per_minute
    want, bound = reservation(work)
    if tpm and want > tpm:
        field = "max_tokens" if work["kind"] == "generate" else "input"
        raise ApiError(400, f"This request may use up to {want} tokens (its prompt counts as up to {bound}"
                            + (f", plus max_tokens {work['params']['max_new_tokens']} × n {work.get('n', 1)}"
                               if work["kind"] == "generate" else "")
                            + f"), more than the {tpm} tokens per minute {budget.whose} may use; lower "
                              f"max_tokens or send less text.", param=field, code="exceeds_token_limit")
    minute, retry_after = _window()
    requests_key = f"tauon:rl:req:{budget.bucket}:{minute}"
    tokens_key = f"tauon:rl:tok:{budget.bucket}:{minute}"
    status, used = await redis_client().eval(RESERVE, 2, requests_key, tokens_key, rpm, tpm, want, KEY_TTL_S)
    if status == 1:
        raise ApiError(429, f"Rate limit reached: {budget.whose} may make {rpm} requests per minute; retry in "
                            f"{retry_after} s.", code="rate_limit_requests", retry_after=retry_after)
    if status == 2:
        raise ApiError(429, f"Rate limit reached: {budget.whose} may use {tpm} tokens per minute; {used} are used "
                            f"or reserved by requests in flight, and this one reserves up to {want} (prompt + "
                            f"max_tokens × n); retry in {retry_after} s or lower max_tokens.",
                       code="rate_limit_tokens", retry_after=retry_after)
    return Ticket(budget, tokens_key, want if tpm else 0, bound)


async def settle(ticket: Ticket, used: int) -> None:
    """Replace the reservation by what the request really used (once; later calls do nothing)."""
    if ticket.settled:
        return
    ticket.settled = True
    if not ticket.reserved or used == ticket.reserved:
        return
    await redis_client().eval(SETTLE, 1, ticket.counter, used - ticket.reserved)


def used_tokens(ticket: Ticket, usage: dict[str, int] | None, streamed: int) -> int:
    """What a request used: its usage when it finished; else, when tokens were produced before it failed
    or was cancelled, the prompt's bound plus those tokens; else nothing (the whole reservation back)."""
    if usage:
        return int(usage["prompt_tokens"]) + int(usage.get("completion_tokens", 0))
    return ticket.prompt_bound + streamed if streamed else 0
