"""The lines of a batch input file: the file's shape is checked at upload (JSONL, one object per line,
a unique `custom_id` each); each line's request is checked like the interactive endpoint would check it
when the batch is validated, and a bad line becomes a line of the error file, not a failed batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from console.batches.choices import ENDPOINTS
from console.inference import requests as parse
from console.inference.errors import ApiError, invalid

CUSTOM_ID_MAX = 512
TASK_OF = {"/v1/chat/completions": "text-generation", "/v1/completions": "text-generation",
           "/v1/embeddings": "embeddings"}
BATCH_PRIORITY = 1  # SamplingParams.priority of batch lines: interactive requests (0) go first


@dataclass(slots=True)
class Shape:
    lines: int
    bytes: int


def check_file(raw: Iterable[bytes], max_lines: int) -> Shape:
    """Refuse (ApiError 400) a file that is not JSONL of `{custom_id, method, url, body}` objects."""
    seen: set[str] = set()
    count = size = 0
    for number, line in enumerate(raw, start=1):
        size += len(line)
        if not line.strip():
            continue
        try:
            data = parse.load_json(line)
        except ApiError as exc:
            raise invalid(f"Line {number} is not a JSON object ({exc.message}); a batch file is JSONL: one "
                          "{\"custom_id\", \"method\", \"url\", \"body\"} object per line.", "file",
                          code="invalid_jsonl") from exc
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > CUSTOM_ID_MAX:
            raise invalid(f"Line {number}: 'custom_id' must be a non-empty string of at most {CUSTOM_ID_MAX} "
                          "characters; it names the line's answer in the output file.", "file",
                          code="invalid_custom_id")
        if custom_id in seen:
            raise invalid(f"Line {number}: custom_id {custom_id!r} appears twice; each line needs its own.",
                          "file", code="duplicate_custom_id")
        seen.add(custom_id)
        count += 1
        if count > max_lines:
            raise invalid(f"The file has more than {max_lines} lines, the most one batch may have; split it.",
                          "file", code="too_many_lines")
    if not count:
        raise invalid("The file has no lines; send one JSON request object per line.", "file", code="empty_file")
    return Shape(count, size)


def read(path: Any) -> Iterable[tuple[int, dict[str, Any]]]:
    """(index, object) of every non-empty line of a file that passed `check_file`."""
    index = 0
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield index, json.loads(line)
                index += 1


def check_line(data: dict[str, Any], endpoint: str, deployment_for: Callable[[str], Any]) -> dict[str, Any]:
    """What the worker runs for one line: {deployment, queue, config, work, n, logprobs, token_ids}.
    Raises ApiError with what is wrong with it (it goes to the error file)."""
    if data.get("method") != "POST":
        raise invalid(f"'method' must be \"POST\", got {data.get('method')!r}.", "method")
    url = data.get("url")
    if url not in ENDPOINTS:
        raise invalid(f"'url' {url!r} is not a batch endpoint; use one of {', '.join(ENDPOINTS)}.", "url",
                      code="invalid_url")
    if url != endpoint:
        raise invalid(f"'url' is {url} but this batch runs {endpoint}; one batch runs one endpoint.", "url",
                      code="mismatched_url")
    body = data.get("body")
    if not isinstance(body, dict):
        raise invalid("'body' must be the JSON object the endpoint takes.", "body", code="invalid_type")
    if body.get("stream"):
        raise invalid("'stream' is not available in a batch: answers are collected in the output file.",
                      "body.stream", code="unsupported_parameter")
    name = parse.model_name(body)
    deployment = deployment_for(name)
    if deployment is None:
        raise ApiError(404, f"The model '{name}' does not exist; GET /v1/models lists the deployments.",
                       param="body.model", code="model_not_found")
    if deployment.model.task != TASK_OF[url]:
        raise invalid(f"'{name}' serves {deployment.model.task}, which {url} does not do.", "body.model",
                      code="wrong_task")
    if url == "/v1/embeddings":
        parsed = parse.embeddings(body, deployment.config)
        parsed.work["priority"] = BATCH_PRIORITY  # the encoder runs interactive requests' batches first
    else:
        parsed = (parse.chat if url == "/v1/chat/completions" else parse.completion)(body, deployment.config)
        parsed.work["params"]["priority"] = BATCH_PRIORITY
    return {"deployment": deployment.name, "work": parsed.work, "n": parsed.n, "logprobs": parsed.logprobs,
            "token_ids": parsed.token_ids}
