"""Inference limits that hold (console/inference/limits.py), through the real web server, Redis and serving
worker: tokens are reserved at admission (prompt bound + max_tokens × n) and settled at the finish, so
concurrent requests cannot overrun a budget; a user's keys share the user's budget unless an admin gave a
key its own.

The rule asserted: a request is admitted only if what the minute has used or reserved plus its own
reservation fits the budget; no request is let through beyond it. Prompts here are token ids, whose bound
is exact, and `ignore_eos` makes every answer exactly `max_tokens`, so a reservation equals the usage."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from console.accounts.models import ApiKey
from tests.conftest import make_user
from tests.serving_rows import deploy

pytestmark = pytest.mark.django_db(transaction=True)
PROMPT = [101, 7592, 2045, 102, 2129]  # 5 token ids


def complete(web_server, raw: str, max_tokens: int) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(f"{web_server.url}/v1/completions", headers={"Authorization": f"Bearer {raw}"}, timeout=60,
                      json={"model": "chat", "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True})


def served(response: httpx.Response) -> int:
    return response.json()["usage"]["total_tokens"] if response.status_code == 200 else 0


def fresh_minute() -> None:
    """Start a test well inside a minute, so its requests all count against one minute's budget."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def test_eight_concurrent_requests_never_use_more_than_the_tokens_per_minute(serving, web_server, llama_dir, bob,
                                                                             charlie):
    deploy("chat", llama_dir, owner=bob)
    _, raw = ApiKey.issue(charlie, "batch", tokens_per_minute=50)
    fresh_minute()
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: complete(web_server, raw, max_tokens=20), range(8)))
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert sum(served(r) for r in replies) == 50  # 2 × (5 + 20): exactly the budget, never more
    assert len(ok) == 2 and all(r.json()["usage"]["completion_tokens"] == 20 for r in ok)
    assert len(refused) == 6 and all(r.status_code == 429 for r in refused)
    for r in refused:
        assert r.json()["error"]["code"] == "rate_limit_tokens" and 1 <= int(r.headers["Retry-After"]) <= 60
        assert "this key may use 50 tokens per minute" in r.json()["error"]["message"]


def test_a_request_is_settled_at_its_real_usage_so_the_rest_of_the_budget_stays_usable(serving, web_server,
                                                                                         llama_dir, bob, charlie):
    deploy("chat", llama_dir, owner=bob)
    _, raw = ApiKey.issue(charlie, "chatty", tokens_per_minute=60)
    fresh_minute()
    stops = httpx.post(f"{web_server.url}/v1/completions", headers={"Authorization": f"Bearer {raw}"}, timeout=60,
                       json={"model": "chat", "prompt": PROMPT, "max_tokens": 50, "stop": [" "]})
    assert stops.status_code == 200, stops.text  # reserved 55; used only what it generated before a stop
    used = served(stops)
    assert used < 55
    # what was given back is usable at once: a request that fits only with the refund passes
    fits = complete(web_server, raw, max_tokens=60 - used - len(PROMPT))
    assert fits.status_code == 200, fits.text
    assert complete(web_server, raw, max_tokens=1).status_code == 429


def test_a_request_that_can_never_fit_the_budget_gets_400_naming_both_numbers(serving, web_server, llama_dir, bob,
                                                                               charlie):
    deploy("chat", llama_dir, owner=bob)
    _, raw = ApiKey.issue(charlie, "tiny", tokens_per_minute=10)
    res = complete(web_server, raw, max_tokens=8)
    assert res.status_code == 400 and res.json()["error"]["param"] == "max_tokens"
    assert "up to 13 tokens" in res.json()["error"]["message"] and "10 tokens per minute" in res.json()["error"]["message"]


def test_two_keys_of_one_user_share_the_users_budget_and_a_key_with_its_own_limits_does_not(serving, web_server,
                                                                                           llama_dir, bob, alice):
    deploy("chat", llama_dir, owner=bob)
    erin = make_user("erin", "user", tokens_per_minute=60)  # an admin set erin's budget
    (_, first), (_, second) = ApiKey.issue(erin, "laptop"), ApiKey.issue(erin, "ci")
    fresh_minute()
    assert served(complete(web_server, first, max_tokens=35)) == 40
    shared = complete(web_server, second, max_tokens=20)  # 40 + 25 > 60, though this key never sent anything
    assert shared.status_code == 429 and shared.json()["error"]["code"] == "rate_limit_tokens"
    assert "your account (all your keys and the browser share it) may use 60" in shared.json()["error"]["message"]

    own, raw = ApiKey.issue(erin, "batch")
    own.set_limits(alice, own_limits=True, tokens_per_minute=30)  # an admin gives this key a budget of its own
    assert served(complete(web_server, raw, max_tokens=20)) == 25
    assert complete(web_server, first, max_tokens=15).status_code == 200  # 40 + 20 ≤ 60: the user's is untouched


def test_the_browser_session_draws_on_the_same_budget_as_the_users_keys(charlie, alice):
    from console.inference.auth import caller_for

    shared, _ = ApiKey.issue(charlie, "laptop")
    own, _ = ApiKey.issue(charlie, "batch")
    own.set_limits(alice, own_limits=True, requests_per_minute=5)
    session = caller_for(charlie, None).budget
    assert caller_for(charlie, shared).budget == session and session.bucket == f"user:{charlie.pk}"
    assert caller_for(charlie, own).budget.bucket == f"key:{own.hashed_key[:24]}" and caller_for(charlie, own).budget.own
