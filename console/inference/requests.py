"""Parse OpenAI-style request bodies into the request a worker runs, checking every field against
the deployment's caps, so that bad input never reaches a worker or an engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from console.inference.errors import ApiError, invalid

UNSUPPORTED = {  # field: why
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "suffix": "suffix (insertion) is not supported",
    "logit_bias": "logit_bias is not supported",
}
ROLES = {"system", "user", "assistant", "developer"}


@dataclass(slots=True)
class Parsed:
    """What the view needs: the worker's request, plus how to answer."""

    model: str
    work: dict[str, Any]  # sent to the worker (without `deadline`, added when it is sent)
    stream: bool = False
    include_usage: bool = False
    n: int = 1
    logprobs: bool = False
    token_ids: bool = False  # extension `return_token_ids`: each choice also carries its tokens' ids


SEED_MAX = 2**63 - 1


def load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(f"The body is not valid JSON ({exc}); send a JSON object.", code="invalid_json") from exc
    except RecursionError as exc:
        raise invalid("The body nests too deeply; send a JSON object of the documented shape.",
                      code="invalid_json") from exc
    if not isinstance(data, dict):
        raise invalid("The body must be a JSON object.", code="invalid_json")
    for name, value in data.items():
        _check_encodable(name, value)
    return data


def _check_encodable(name: str, value: Any) -> None:
    """Refuse what JSON parses but nothing downstream can carry: lone surrogates ("\\ud800" is no
    character, so it has no UTF-8), and values nested too deeply to serialize."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(f"'{name}' holds a lone UTF-16 surrogate (such as \\ud800), which is not a character; "
                      f"send valid Unicode text.", name, code="invalid_value") from exc
    except (RecursionError, ValueError) as exc:
        raise invalid(f"'{name}' nests too deeply.", name, code="invalid_value") from exc


def model_name(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required: the name of a deployment (see GET /v1/models).", "model",
                      code="missing_required_parameter")
    return model


def _number(data: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"'{name}' must be a number, got {type(value).__name__}.", name, code="invalid_type")
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low} and {high}, got {value}.", name)
    return float(value)


def _integer(data: dict[str, Any], name: str, default: int | None, low: int, high: int,
             cap_hint: str = "") -> int | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer, got {type(value).__name__}.", name, code="invalid_type")
    if value < low:
        raise invalid(f"'{name}' must be at least {low}, got {value}.", name)
    if value > high:
        raise invalid(f"'{name}' is {value}, above {cap_hint or 'the maximum'} of {high}.", name)
    return value


def _stop(data: dict[str, Any]) -> list[str]:
    stop = data.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise invalid("'stop' must be a non-empty string or a list of up to 4 non-empty strings.", "stop",
                      code="invalid_type")
    return stop


def _refuse_unsupported(data: dict[str, Any]) -> None:
    for name, why in UNSUPPORTED.items():
        if data.get(name) not in (None, [], {}):
            raise invalid(f"'{name}': {why} by this server.", name, code="unsupported_parameter")


def _sampling(data: dict[str, Any], config: dict[str, Any], *, max_tokens_names: tuple[str, ...]) -> dict[str, Any]:
    defaults = config["sampling"]
    cap = int(config["max_tokens"])
    max_tokens = None
    for name in max_tokens_names:  # the first one given counts
        if data.get(name) is not None:
            max_tokens = _integer(data, name, None, 1, cap, "this deployment's cap")
            break
    params: dict[str, Any] = {
        "max_new_tokens": max_tokens or min(int(defaults["max_tokens"]), cap),
        # a default, not asked for: the engine shrinks it to the context the prompt leaves instead of refusing
        "fit_context": max_tokens is None,
        "temperature": _number(data, "temperature", float(defaults["temperature"]), 0.0, 2.0),
        "top_p": _number(data, "top_p", float(defaults["top_p"]), 0.0, 1.0) or 1e-6,
        "presence_penalty": _number(data, "presence_penalty", 0.0, -2.0, 2.0),
        "frequency_penalty": _number(data, "frequency_penalty", 0.0, -2.0, 2.0),
        "stop": _stop(data),
    }
    params["ignore_eos"] = _flag(data, "ignore_eos")  # vLLM's extension: generate exactly max_tokens
    seed = _integer(data, "seed", None, -SEED_MAX - 1, SEED_MAX)
    if seed is not None:
        params["seed"] = seed
    return params


def _stream_options(data: dict[str, Any], stream: bool) -> bool:
    options = data.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid("'stream_options' must be an object.", "stream_options", code="invalid_type")
    if not stream:
        raise invalid("'stream_options' is only allowed with stream: true.", "stream_options")
    return bool(options.get("include_usage"))


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be true or false.", name, code="invalid_type")
    return value


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(f"messages[{i}].content: only text parts are supported.", f"messages[{i}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(f"messages[{i}].content must be a string or a list of text parts.", f"messages[{i}].content",
                  code="invalid_type")


def chat(data: dict[str, Any], config: dict[str, Any]) -> Parsed:
    _refuse_unsupported(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list of {role, content} objects.", "messages",
                      code="missing_required_parameter" if messages is None else "invalid_type")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"messages[{i}] must be an object with 'role' and 'content'.", f"messages[{i}]",
                          code="invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {role!r}.",
                          f"messages[{i}].role")
        clean.append({"role": "system" if role == "developer" else role, "content": _content(message, i)})
    stream = _flag(data, "stream")
    logprobs = _flag(data, "logprobs")
    top = _integer(data, "top_logprobs", 0, 0, 20) or 0
    if top and not logprobs:
        raise invalid("'top_logprobs' needs 'logprobs': true.", "top_logprobs")
    n = _integer(data, "n", 1, 1, int(config["max_n"]), "this deployment's cap") or 1
    params = _sampling(data, config, max_tokens_names=("max_completion_tokens", "max_tokens"))
    params.update(logprobs=logprobs, top_logprobs=top)
    work = {"kind": "generate", "prompt": clean, "params": params, "n": n}
    return Parsed(model_name(data), work, stream, _stream_options(data, stream), n, logprobs,
                  _flag(data, "return_token_ids"))


def completion(data: dict[str, Any], config: dict[str, Any]) -> Parsed:
    _refuse_unsupported(data)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        pass  # token ids
    elif not isinstance(prompt, str) or not prompt:
        raise invalid("'prompt' must be a non-empty string (one prompt per request).", "prompt",
                      code="missing_required_parameter" if prompt is None else "invalid_type")
    if _flag(data, "echo"):
        raise invalid("'echo' is not supported by this server.", "echo", code="unsupported_parameter")
    best_of = data.get("best_of")
    if best_of not in (None, 1):
        raise invalid("'best_of' is not supported by this server; use 'n'.", "best_of", code="unsupported_parameter")
    stream = _flag(data, "stream")
    top = _integer(data, "logprobs", None, 0, 5)
    n = _integer(data, "n", 1, 1, int(config["max_n"]), "this deployment's cap") or 1
    params = _sampling(data, config, max_tokens_names=("max_tokens",))
    params.update(logprobs=top is not None, top_logprobs=top or 0)
    work = {"kind": "generate", "prompt": prompt, "params": params, "n": n}
    return Parsed(model_name(data), work, stream, _stream_options(data, stream), n, top is not None,
                  _flag(data, "return_token_ids"))


def texts(data: dict[str, Any], config: dict[str, Any], field: str) -> list[str]:
    value = data.get(field)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise invalid(f"'{field}' must be a string or a non-empty list of strings.", field,
                      code="missing_required_parameter" if value is None else "invalid_type")
    if any(not t for t in value):
        raise invalid(f"'{field}' must not contain empty strings.", field)
    _check_encodable(field, value)  # /predict's body comes through DRF, not load_json
    cap = int(config["max_input_items"])
    if len(value) > cap:
        raise ApiError(400, f"'{field}' has {len(value)} items, above this deployment's cap of {cap}; split it.",
                       param=field, code="too_many_items")
    return value


def embeddings(data: dict[str, Any], config: dict[str, Any]) -> Parsed:
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64", None):
        raise invalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    if data.get("dimensions") is not None:
        raise invalid("'dimensions' is not supported by this model.", "dimensions", code="unsupported_parameter")
    work = {"kind": "embed", "input": texts(data, config, "input"), "encoding_format": encoding or "float"}
    return Parsed(model_name(data), work)
