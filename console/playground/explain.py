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
from console.playground.choices import CLASSIFICATION, EXPLAINABLE, GENERATION, METHODS, SPANS
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
    span = serializers.ChoiceField(choices=SPANS, default="prompt",
                                   help_text="Which input tokens count: the whole prompt, or only the text of "
                                             "the user messages (skipping the chat template's own tokens).")
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
    name = deployment.name
    task = deployment.model.task
    if task not in EXPLAINABLE:
        raise Refused(f"'{name}' serves {task}; explain works for text-generation and text-classification "
                      "deployments.", code="unsupported_task", field="name")
    body = ExplainRequestSerializer(data=data)
    body.is_valid(raise_exception=True)
    req = dict(body.validated_data)
    method = req["method"]
    if task == CLASSIFICATION:
        if method != "integrated_gradients" and "method" in data:
            raise Refused(f"Classifiers are explained with integrated_gradients (on the token embeddings); "
                          f"{method} is for text generation.", code="unsupported_method", field="method")
        method = "integrated_gradients"
        text = req.get("input") if req.get("input") is not None else req.get("prompt")
        if text is None:
            raise Refused("Give the text to classify as `input`.", code="required", field="input")
    elif req.get("input") is not None:
        raise Refused("`input` is for classifiers; give `messages` or `prompt`.", code="invalid", field="input")
    quantization = (deployment.config.get("engine") or {}).get("quantization", "none")
    if quantization == "none" and method == "integrated_gradients":  # a compressed child stored as int8
        target = deployment.target_version()
        quantization = (is_stored(Path(target.path)) if target else None) or "none"
    if method == "integrated_gradients" and quantization != "none":
        raise Refused(f"integrated_gradients needs gradients through the model, and '{name}' runs {quantization} "
                      "quantized layers, which have none; use feature_ablation or shapley.",
                      code="unsupported_method", field="method")
    cap = settings.TAUON_EXPLAIN_MAX_OUTPUT_TOKENS
    output = req.get("output")
    n_out: int | None = None
    if task == GENERATION and output is not None:
        if isinstance(output, list):
            n_out = len(output)
        else:
            version = deployment.target_version()
            n_out = count_tokens(version.path, output) if version else None
        if n_out is not None and n_out > cap:
            raise Refused(f"The answer has {n_out} tokens; Explain is capped at {cap} output tokens. Ask for at "
                          f"most {cap} tokens (max_tokens) and explain that answer.",
                          code="output_too_long", field="output")
        if n_out == 0:
            raise Refused("The answer is empty; there is nothing to explain.", code="invalid", field="output")
    if task == GENERATION:
        texts = [m["content"] for m in req["messages"]] if "messages" in req else [req["prompt"]]
        version = deployment.target_version()
        counts = [count_tokens(version.path, t) for t in texts] if version else []
        n_in = sum(c for c in counts if c is not None)
        prompt_cap = settings.TAUON_EXPLAIN_MAX_PROMPT_TOKENS
        if n_in > prompt_cap:
            raise Refused(f"The prompt has about {n_in} tokens; attribution is capped at {prompt_cap} prompt tokens "
                          "for Explain. Shorten it.", code="prompt_too_long",
                          field="messages" if "messages" in req else "prompt")
    params: dict[str, Any] = {"deployment": name, "task": task, "method": method, "span": req["span"],
                              "words": req["words"], "output": output}
    if task == GENERATION:
        if "messages" in req:
            params["messages"] = [{"role": m["role"], "content": m["content"]} for m in req["messages"]]
        else:
            params["prompt"] = req["prompt"]
    else:
        params["input"] = text
        params["label"] = req.get("label")
    for key in ("steps", "samples"):
        if req.get(key) is not None:
            params[key] = req[key]
    params["output_tokens"] = n_out
    status, reason = deployment.status_and_reason()
    if status != DeploymentStatus.READY:
        raise Refused(f"Deployment '{name}' is not ready ({status}): {reason}", code="deployment_not_ready",
                      status=409)
    return params
