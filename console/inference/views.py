"""The OpenAI-compatible API under /v1, plus /metrics. Async views: a streamed answer is an async
generator, so a client that disconnects cancels it (Django cancels the response task) and the
worker is told to stop at once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import RedisError

from console.deployments.models import Deployment
from console.inference import formats, metrics
from console.inference import requests as parse
from console.inference.auth import Caller, authenticate
from console.inference.errors import ApiError
from console.inference.gateway import Call
from console.inference.limits import Ticket, reserve, settle, used_tokens
from console.inference.ttl import TTLCache

log = logging.getLogger("tauon.requests")
DEPLOYMENTS: TTLCache[Deployment] = TTLCache(ttl_s=1.0)  # changes (config, stop) apply within a second
GENERATION = ("text-generation",)
BUSY = ApiError(503, "The server's message broker is unavailable or busy; retry shortly.", code="unavailable",
                retry_after=1)
ENDPOINT_FOR = {"text-generation": "/v1/chat/completions or /v1/completions", "embeddings": "/v1/embeddings",
                "text-classification": "/api/deployments/{name}/predict",
                "token-classification": "/api/deployments/{name}/predict"}


def _errors(view: Callable[..., Awaitable[HttpResponse]]) -> Callable[..., Awaitable[HttpResponse]]:
    async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return await view(request, *args, **kwargs)
        except ApiError as exc:
            return exc.response()
        except RedisError as exc:
            log.warning("redis: %s", exc)
            return BUSY.response()

    wrapped.__name__ = view.__name__
    return csrf_exempt(wrapped)  # API keys, not cookies: nothing for CSRF to protect


async def _deployment(request: HttpRequest, tasks: tuple[str, ...], endpoint: str) -> tuple[Caller, Deployment, dict]:
    caller = await authenticate(request)
    try:
        data = parse.load_json(request.body)
    except RequestDataTooBig as exc:
        raise ApiError(413, "The request body is too large; send less text per request.",
                       code="request_too_large") from exc
    name = parse.model_name(data)
    deployment = await DEPLOYMENTS.get_or_load(
        name, lambda: Deployment.objects.select_related("model").filter(name=name).afirst())
    if deployment is None:
        raise ApiError(404, f"The model '{name}' does not exist; GET /v1/models lists the deployments you can use.",
                       param="model", code="model_not_found")
    if deployment.model.task not in tasks:
        raise ApiError(400, f"'{name}' serves {deployment.model.task}, which {endpoint} does not do; use "
                            f"{ENDPOINT_FOR[deployment.model.task].replace('{name}', name)}.",
                       param="model", code="wrong_task")
    if deployment.stopped:
        raise ApiError(503, f"Deployment '{name}' is stopped; a maintainer can start it again.",
                       code="deployment_stopped")
    return caller, deployment, data


def _log(call: Call, endpoint: str, status: int, started: float, usage: dict[str, int] | None,
         ttft: float | None, code: str | None = None) -> None:
    elapsed = time.perf_counter() - started
    metrics.REQUESTS.labels(call.deployment, endpoint, str(status)).inc()
    metrics.LATENCY.labels(call.deployment, endpoint).observe(elapsed)
    if code:
        metrics.ERRORS.labels(call.deployment, code).inc()
    if usage:
        metrics.PROMPT_TOKENS.labels(call.deployment).inc(usage["prompt_tokens"])
        metrics.GENERATED_TOKENS.labels(call.deployment).inc(usage["completion_tokens"])
        if ttft is not None and usage["completion_tokens"] > 1:
            metrics.TPOT.labels(call.deployment).observe((elapsed - ttft) / (usage["completion_tokens"] - 1))
    if ttft is not None:
        metrics.TTFT.labels(call.deployment).observe(ttft)
    log.info(json.dumps({"request_id": call.request_id, "deployment": call.deployment, "endpoint": endpoint,
                         "status": status, "code": code, "replica": call.replica, "ttft_s": ttft,
                         "duration_s": round(elapsed, 4), **(usage or {})}))


async def _generate(request: HttpRequest, chat: bool) -> HttpResponse:
    started = time.perf_counter()
    endpoint = "/v1/chat/completions" if chat else "/v1/completions"
    caller, deployment, data = await _deployment(request, GENERATION, endpoint)
    parsed = (parse.chat if chat else parse.completion)(data, deployment.config)
    ticket = await reserve(caller.budget, parsed.work)
    call = Call(deployment.name, deployment.queue, deployment.config, parsed.work)
    try:
        await call.open()
        accepted = await call.first()
    except ApiError as exc:
        await call.close()
        await settle(ticket, 0)
        _log(call, endpoint, exc.status, started, None, None, exc.code)
        raise
    except BaseException:
        await call.close()
        await settle(ticket, 0)
        raise
    builder = formats.Builder(call.request_id, deployment.name, chat=chat, n=parsed.n,
                              version=accepted.get("version"), token_ids=parsed.token_ids)
    if parsed.stream:
        response = ClosingStream(_sse(call, builder, parsed, ticket, endpoint, started),
                                         content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return _tagged(response, call)
    ttft = None
    try:
        async for event in call.events():
            if ttft is None and event["type"] == "delta":
                ttft = time.perf_counter() - started
            builder.on_event(event, parsed.logprobs)
    except ApiError as exc:
        _log(call, endpoint, exc.status, started, None, ttft, exc.code)
        raise
    finally:
        await call.close()
        await settle(ticket, used_tokens(ticket, builder.usage, sum(map(len, builder.ids))))
    _log(call, endpoint, 200, started, builder.usage, ttft)
    return _tagged(JsonResponse(builder.body(parsed.logprobs)), call)


class ClosingStream(StreamingHttpResponse):
    """A streamed answer whose generator is closed (its `finally` run: the place freed, the worker told to
    cancel) the moment the client goes away. Django's own `__aiter__` wraps the generator twice and closes
    only its wrapper when the handler is cancelled in the middle of a `send`, which leaves the generator
    suspended until the garbage collector finds it: the request's place stayed taken until its generation
    ended."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with aclosing(self._iterator) as parts:
            async for part in parts:
                yield self.make_bytes(part)


def _tagged(response: HttpResponse, call: Call) -> HttpResponse:
    """Which request and which replica: for logs, support and tests."""
    response["X-Request-Id"] = call.request_id
    if call.replica:
        response["X-Tauon-Replica"] = call.replica
    return response


def _sse_line(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _sse(call: Call, builder: formats.Builder, parsed: parse.Parsed, ticket: Ticket, endpoint: str,
               started: float) -> AsyncIterator[str]:
    ttft, status, code = None, 200, None
    try:
        for chunk in builder.role_chunks():
            yield _sse_line(chunk)
        async for event in call.events():
            if ttft is None and event["type"] == "delta":
                ttft = time.perf_counter() - started
            chunk = builder.on_event(event, parsed.logprobs)
            if chunk is not None:
                if parsed.include_usage:
                    chunk["usage"] = None
                yield _sse_line(chunk)
        if parsed.include_usage:
            yield _sse_line(builder.usage_chunk())
        yield "data: [DONE]\n\n"
    except (ApiError, RedisError) as exc:  # headers are sent: the error travels as an event, as OpenAI does
        error = exc if isinstance(exc, ApiError) else BUSY
        status, code = error.status, error.code
        yield _sse_line(error.body())
    except (asyncio.CancelledError, GeneratorExit):  # the client went away (mid-read, or mid-send)
        status, code = 499, "client_closed"
        raise
    finally:
        await call.close()
        await settle(ticket, used_tokens(ticket, builder.usage, sum(map(len, builder.ids))))
        _log(call, endpoint, status, started, builder.usage, ttft, code)


@require_POST
@_errors
async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await _generate(request, chat=True)


@require_POST
@_errors
async def completions(request: HttpRequest) -> HttpResponse:
    return await _generate(request, chat=False)


@require_POST
@_errors
async def embeddings(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    caller, deployment, data = await _deployment(request, ("embeddings",), "/v1/embeddings")
    parsed = parse.embeddings(data, deployment.config)
    ticket = await reserve(caller.budget, parsed.work)
    call = Call(deployment.name, deployment.queue, deployment.config, parsed.work)
    done: dict[str, Any] = {}
    try:
        await call.open()
        done = await call.done()
    except ApiError as exc:
        _log(call, "/v1/embeddings", exc.status, started, None, None, exc.code)
        raise
    finally:
        await call.close()
        await settle(ticket, used_tokens(ticket, done.get("usage"), 0))
    tokens = int(done["usage"]["prompt_tokens"])
    _log(call, "/v1/embeddings", 200, started, done["usage"], None)
    return JsonResponse(formats.embeddings_body(deployment.name, done["embeddings"], tokens,
                                                parsed.work["encoding_format"]))


@require_GET
@_errors
async def models(request: HttpRequest) -> HttpResponse:
    await authenticate(request)
    rows = [d async for d in Deployment.objects.select_related("model").filter(stopped=False)]
    data = [{"id": d.name, "object": "model", "created": int(d.created_at.timestamp()), "owned_by": "tauon",
             "task": d.model.task, "registry_model": d.model.name} for d in rows]
    return JsonResponse({"object": "list", "data": data})


@require_GET
@_errors
async def model(request: HttpRequest, name: str) -> HttpResponse:
    await authenticate(request)
    d = await Deployment.objects.select_related("model").filter(name=name, stopped=False).afirst()
    if d is None:
        raise ApiError(404, f"The model '{name}' does not exist.", param="model", code="model_not_found")
    return JsonResponse({"id": d.name, "object": "model", "created": int(d.created_at.timestamp()),
                         "owned_by": "tauon", "task": d.model.task, "registry_model": d.model.name})


@require_GET
@_errors
async def prometheus(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; needs an API key like everything else (scrapers send bearer tokens)."""
    await authenticate(request)
    body = await sync_to_async(generate_latest)(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
