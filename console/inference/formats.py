"""OpenAI's response shapes, built from the worker's events (see workers/serving/inference.py `Events`)."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any


def _lp_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(lp: list[list[Any]]) -> dict[str, Any]:
    """Worker logprobs `[[token, logprob, [[id, token, logprob], …]], …]` in chat's shape."""
    return {"content": [{**_lp_entry(tok, val), "top_logprobs": [_lp_entry(t, v) for _, t, v in top]}
                        for tok, val, top in lp]}


def completion_logprobs(lp: list[list[Any]], offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for tok, _, _ in lp:
        offsets.append(pos)
        pos += len(tok)
    return {"tokens": [tok for tok, _, _ in lp], "token_logprobs": [val for _, val, _ in lp],
            "top_logprobs": [{t: v for _, t, v in top} for _, _, top in lp], "text_offset": offsets}


def usage(u: dict[str, int]) -> dict[str, int]:
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["prompt_tokens"] + u["completion_tokens"]}


class Builder:
    """Chunks (streaming) and the whole body (not streaming) of one chat or text completion."""

    def __init__(self, request_id: str, model: str, *, chat: bool, n: int, version: int | None,
                 token_ids: bool = False):
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id.removeprefix("req-")
        self.model, self.chat, self.n = model, chat, n
        self.created = int(time.time())
        self.fingerprint = f"tauon-v{version}" if version is not None else None
        self.texts = [""] * n
        self.lps: list[list[list[Any]]] = [[] for _ in range(n)]
        self.want_ids = token_ids
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.usage: dict[str, int] | None = None

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "system_fingerprint": self.fingerprint,
                "choices": choices}

    def role_chunks(self) -> list[dict[str, Any]]:
        if not self.chat:
            return []
        return [self._envelope([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}]) for i in range(self.n)]

    def on_event(self, event: dict[str, Any], want_logprobs: bool) -> dict[str, Any] | None:
        """Record an event; return the chunk to stream for it, if any."""
        kind = event["type"]
        if kind == "delta":
            i, text, lp = event["i"], event["text"], event.get("lp") or []
            offset = len(self.texts[i])
            self.texts[i] += text
            self.lps[i].extend(lp)
            self.ids[i].extend(event.get("ids") or [])
            if not text and not (want_logprobs and lp) and not (self.want_ids and event.get("ids")):
                return None
            logprobs = None
            if want_logprobs:
                logprobs = chat_logprobs(lp) if self.chat else completion_logprobs(lp, offset)
            if self.chat:
                choice = {"index": i, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": None}
            else:
                choice = {"index": i, "text": text, "logprobs": logprobs, "finish_reason": None}
            if self.want_ids:
                choice["token_ids"] = event.get("ids") or []
            return self._envelope([choice])
        if kind == "finish":
            i = event["i"]
            self.finish[i] = event["reason"]
            if self.chat:
                return self._envelope([{"index": i, "delta": {}, "logprobs": None, "finish_reason": event["reason"]}])
            return self._envelope([{"index": i, "text": "", "logprobs": None, "finish_reason": event["reason"]}])
        if kind == "done":
            self.usage = usage(event["usage"])
        return None

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._envelope([]), "usage": self.usage}

    def body(self, want_logprobs: bool) -> dict[str, Any]:
        choices = []
        for i in range(self.n):
            logprobs = None
            if want_logprobs:
                logprobs = chat_logprobs(self.lps[i]) if self.chat else completion_logprobs(self.lps[i], 0)
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": self.texts[i]},
                                "logprobs": logprobs, "finish_reason": self.finish[i]})
            else:
                choices.append({"index": i, "text": self.texts[i], "logprobs": logprobs,
                                "finish_reason": self.finish[i]})
            if self.want_ids:
                choices[-1]["token_ids"] = self.ids[i]
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "system_fingerprint": self.fingerprint,
                "choices": choices, "usage": self.usage}


def embeddings_body(model: str, vectors: list[list[float]], prompt_tokens: int, encoding: str) -> dict[str, Any]:
    def encode(v: list[float]) -> Any:
        if encoding == "base64":
            return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
        return v

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
