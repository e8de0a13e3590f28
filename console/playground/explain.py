"""`POST /api/deployments/{name}/explain`: check the request against the deployment (4xx before anything
is queued), then start an `explain` job on the deployment's own queue, where a worker hosting its model
runs workers/explain.py."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from django.conf import settings
from rest_framework import serializers

from console.deployments.choices import DeploymentStatus
from console.deployments.models import Deployment
from console.playground.choices import CLASSIFICATION, EXPLAINABLE, METHODS, SPANS
from engine.int8_format import is_stored

ROLES = ("system", "user", "assistant")


class Refused(Exception):
    """The request cannot be explained; `status`, `code`, `field` say how to answer."""

    def __init__(self, message: str, *, code: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message, self.code, self.status, self.field = message, code, status, field


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class ExplainRequestSerializer(serializers.Serializer):
    messages = MessageSerializer(many=True, required=False, help_text="The chat so far (text generation); the "
                                 "answer explained is the assistant's next turn. Give this or `prompt`.")
    prompt = serializers.CharField(required=False, trim_whitespace=False,
                                   help_text="A plain completion prompt (text generation), or the text to classify.")
    input = serializers.CharField(required=False, trim_whitespace=False,
                                  help_text="The text to classify (text classification); same as `prompt`.")
    output = serializers.JSONField(required=False, allow_null=True,
                                   help_text="The answer to explain: its text, or its exact token ids (a list of "
                                             "integers). When absent the deployment generates it greedily.")
    method = serializers.ChoiceField(choices=METHODS, default="feature_ablation",
                                     help_text="feature_ablation (any model), integrated_gradients (on the token "
                                               "embeddings), shapley (Shapley value sampling).")
    span = serializers.ChoiceField(choices=SPANS, required=False,
                                   help_text="Which input tokens count: only the text of the user messages "
                                             "(`user`, the default with `messages`, as on the playground page), or "
                                             "the whole prompt with the chat template's own tokens (`prompt`, the "
                                             "default with a plain `prompt`).")
    words = serializers.BooleanField(default=False, help_text="Group tokens into words (one column per word).")
    label = serializers.CharField(required=False, help_text="Classifiers: the label to explain (default: the "
                                                            "predicted one).")
    steps = serializers.IntegerField(required=False, min_value=2, max_value=128,
                                     help_text="Integrated gradients: points on the path (default 16; 32 for "
                                               "classifiers).")
    samples = serializers.IntegerField(required=False, min_value=1, max_value=64,
                                       help_text="Shapley: random feature orders sampled (default 4).")

    def validate_output(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                     for v in value):
            return value
        raise serializers.ValidationError("must be the answer's text or a non-empty list of token ids.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("messages", "prompt", "input") if attrs.get(k) is not None]
        if len(given) != 1:
            raise serializers.ValidationError({"messages": "Give exactly one of `messages` or `prompt` "
                                                           "(`input` for classifiers)."})
        if "messages" in attrs and not attrs["messages"]:
            raise serializers.ValidationError({"messages": "must hold at least one message."})
        return attrs


class ExplainAcceptedSerializer(serializers.Serializer):
    job = serializers.IntegerField(help_text="GET /api/jobs/{job}/ follows it; its `result` is "
                                             '{"input_tokens": [...], "output_tokens": [...], "attributions": '
                                             "[[...] one row per output token, one value per input token]} plus "
                                             "method, forward_passes, batches, seconds and output_text.")
    deployment = serializers.CharField()
    method = serializers.CharField()
    output_tokens = serializers.IntegerField(allow_null=True, help_text="Tokens in the answer when it was given.")


@functools.lru_cache(maxsize=16)
def _tokenizer(path: str) -> Any:
    """The version's tokenizer.json through `tokenizers` alone (fast, no torch), for counting tokens."""
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        return None
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()  # some files pad every text to a fixed length
    tokenizer.no_truncation()
    return tokenizer


def count_tokens(folder: Path, text: str) -> int | None:
    tokenizer = _tokenizer(str(folder))
    return None if tokenizer is None else len(tokenizer.encode(text, add_special_tokens=False).ids)


def prepare(deployment: Deployment, data: dict[str, Any]) -> dict[str, Any]:
    """The explain job's params, or `Refused` saying what is wrong and how to fix it."""
    task = deployment.model.task
    if task not in EXPLAINABLE:
        raise Refused(f"'{deployment.name}' serves {task}; explain works for text-generation and "
                      "text-classification deployments.", code="unsupported_task", field="name")
    body = ExplainRequestSerializer(data=data)
    body.is_valid(raise_exception=True)
    req = dict(body.validated_data)
    if task == CLASSIFICATION:
        params = _classification_params(deployment, req, method_given="method" in data)
    else:
        params = _generation_params(deployment, req)
    params.update({"deployment": deployment.name, "task": task, "words": req["words"]})
    params.update({key: req[key] for key in ("steps", "samples") if req.get(key) is not None})
    status, reason = deployment.status_and_reason()
    if status != DeploymentStatus.READY:
        raise Refused(f"Deployment '{deployment.name}' is not ready ({status}): {reason}",
                      code="deployment_not_ready", status=409)
    return params


def _classification_params(deployment: Deployment, req: dict[str, Any], *, method_given: bool) -> dict[str, Any]:
    """Classifiers: integrated gradients on the text given as `input` (or `prompt`)."""
    if req["method"] != "integrated_gradients" and method_given:
        raise Refused(f"Classifiers are explained with integrated_gradients (on the token embeddings); "
                      f"{req['method']} is for text generation.", code="unsupported_method", field="method")
    text = req.get("input") if req.get("input") is not None else req.get("prompt")
    if text is None:
        raise Refused("Give the text to classify as `input`.", code="required", field="input")
    _check_gradients(deployment, "integrated_gradients")
    return {"method": "integrated_gradients", "span": req.get("span") or "prompt", "input": text,
            "label": req.get("label"), "output": req.get("output"), "output_tokens": None}


def _generation_params(deployment: Deployment, req: dict[str, Any]) -> dict[str, Any]:
    """Text generation: the chat (`messages`) or a plain `prompt`, and the answer, each within its cap. The
    default span is what the page shows: the user's messages (without the chat template's tokens)."""
    if req.get("input") is not None:
        raise Refused("`input` is for classifiers; give `messages` or `prompt`.", code="invalid", field="input")
    _check_gradients(deployment, req["method"])
    chat = "messages" in req
    version = deployment.target_version()
    output = req.get("output")
    n_out = _output_tokens(version, output)
    if n_out is not None and n_out > settings.TAUON_EXPLAIN_MAX_OUTPUT_TOKENS:
        raise Refused(f"The answer has {n_out} tokens; {output_cap_message()}", code="output_too_long",
                      field="output")
    if n_out == 0:
        raise Refused("The answer is empty; there is nothing to explain.", code="invalid", field="output")
    texts = [m["content"] for m in req["messages"]] if chat else [req["prompt"]]
    n_in = sum(c for c in (count_tokens(version.path, t) for t in texts) if c is not None) if version else 0
    prompt_cap = settings.TAUON_EXPLAIN_MAX_PROMPT_TOKENS
    if n_in > prompt_cap:
        raise Refused(f"The prompt has about {n_in} tokens; at most {prompt_cap} prompt tokens can be explained. "
                      "Shorten it.", code="prompt_too_long", field="messages" if chat else "prompt")
    params: dict[str, Any] = {"method": req["method"], "span": req.get("span") or ("user" if chat else "prompt"),
                              "output": output, "output_tokens": n_out}
    if chat:
        params["messages"] = [{"role": m["role"], "content": m["content"]} for m in req["messages"]]
    else:
        params["prompt"] = req["prompt"]
    return params


def output_cap_message() -> str:
    """What a user reads when an answer is too long to explain (the page and the worker say the same)."""
    return (f"at most {settings.TAUON_EXPLAIN_MAX_OUTPUT_TOKENS} output tokens can be explained; lower Max tokens "
            "or explain a shorter answer.")


def _output_tokens(version: Any, output: Any) -> int | None:
    """Tokens in the given answer: its ids, or its text counted with the version's tokenizer (None: unknown)."""
    if output is None:
        return None
    if isinstance(output, list):
        return len(output)
    return count_tokens(version.path, output) if version else None


def _check_gradients(deployment: Deployment, method: str) -> None:
    """Integrated gradients needs gradients through the model: refused for quantized layers (configured, or a
    compressed child stored as int8)."""
    if method != "integrated_gradients":
        return
    quantization = (deployment.config.get("engine") or {}).get("quantization", "none")
    if quantization == "none":
        target = deployment.target_version()
        quantization = (is_stored(Path(target.path)) if target else None) or "none"
    if quantization != "none":
        raise Refused(f"integrated_gradients needs gradients through the model, and '{deployment.name}' runs "
                      f"{quantization} quantized layers, which have none; use feature_ablation or shapley.",
                      code="unsupported_method", field="method")
