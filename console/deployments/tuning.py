"""The `tune` job's params (validated before any job exists) and applying its recommendation to a
deployment (a config change, so the replicas hot-swap: they load the new engine beside the old one).

Params: `deployment` (or `model` + `version`), `workload` (`{"dataset": name}` of a qa or text dataset,
`{"synthetic": {"prompt_tokens": [lo, hi], "output_tokens": [lo, hi]}}`, or `{"chats": [{"messages": [...],
"max_tokens": n}, ...]}`, a sample of the deployment's own traffic, plus `concurrency` levels and
`requests` per trial), `objective` (throughput | latency), `constraints` (ttft_p99_ms, itl_p99_ms,
max_perplexity_ratio, max_memory_bytes), `space` (lists of values per tunable setting) and `max_trials`."""

from __future__ import annotations

import os
from typing import Any

from django.db import transaction

from console.evaluation.params import dataset_named, dataset_version_of, fail, model_named, ready_version
from engine.tuning import (
    CONSTRAINTS,
    OBJECTIVES,
    SPACE_FIELDS,
    check_space,
    forward_floor_ms,
    memory_estimate,
    threads_candidates,
)

PARAMS = ("deployment", "model", "version", "workload", "objective", "constraints", "space", "max_trials")
DERIVED = ("baseline", "base_engine")  # added to the cleaned params: the settings served when it was started
WORKLOAD_KEYS = ("dataset", "dataset_version", "synthetic", "chats", "concurrency", "requests")
MAX_CHAT_CHARS = 32_000  # one sample chat's messages, in characters
MAX_SAMPLE_CHARS = 1_000_000  # all of them (they are kept in the job's params)
SYNTHETIC_KEYS = ("prompt_tokens", "output_tokens")
MAX_TRIALS = 24
MAX_REQUESTS = 512
MAX_CONCURRENCY = 256
DEFAULT_WORKLOAD = {"synthetic": {"prompt_tokens": [16, 128], "output_tokens": [16, 64]}, "concurrency": [1, 8],
                    "requests": 24}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range(value: Any, field: str, high: int) -> list[int]:
    if (not isinstance(value, list) or len(value) != 2 or not all(_int(v) for v in value)
            or not 1 <= value[0] <= value[1] <= high):
        raise fail(field, f"Give a [low, high] range of token counts, 1 ≤ low ≤ high ≤ {high}, e.g. [16, 128].")
    return list(value)


def _target(params: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(deployment or None, model, ready version) the tune measures."""
    from console.deployments.models import Deployment
    from console.registry.choices import VersionStatus

    if params.get("deployment") is not None:
        name = params["deployment"]
        deployment = Deployment.objects.select_related("model").filter(name=name).first() \
            if isinstance(name, str) else None
        if deployment is None:
            raise fail("deployment", f"No deployment named {name!r}; see /api/deployments/.")
        if params.get("model") not in (None, deployment.model.name):  # (a re-run's cleaned params name both)
            raise fail("model", f"Deployment '{deployment.name}' serves '{deployment.model.name}'; name a deployment, "
                                "or a model and version, not both.")
        version = deployment.target_version()
        if version is None or version.status != VersionStatus.READY:
            raise fail("deployment", f"Deployment '{deployment.name}' has no ready version to serve, so no worker "
                                     "can host it; promote or pin a ready version first.")
        return deployment, deployment.model, version
    model = model_named(params.get("model"), "tune")
    return None, model, ready_version(model, params.get("version"), "tune", "tuned")


def _workload(value: Any, model_len: int) -> dict[str, Any]:
    from console.evaluation.choices import TASK_OF_KIND

    workload = {**DEFAULT_WORKLOAD, **({} if value is None else value)} if isinstance(value, dict | None) else None
    if workload is None:
        raise fail("workload", 'must be an object, e.g. {"dataset": "simple-qa", "concurrency": [1, 8]}')
    unknown = sorted(set(workload) - set(WORKLOAD_KEYS))
    if unknown:
        raise fail(f"workload.{unknown[0]}", f"unknown key; a workload has {', '.join(WORKLOAD_KEYS)}")
    if isinstance(value, dict) and "chats" in value:
        if "dataset" in value or "synthetic" in value:
            raise fail("workload.chats", "give one of dataset, synthetic or chats")
        workload.pop("synthetic", None)
        workload["chats"] = _chats(workload["chats"], model_len)
    elif isinstance(value, dict) and "dataset" in value:
        workload.pop("synthetic", None)
        dataset = dataset_named(workload["dataset"], "tune", field="workload.dataset")
        if TASK_OF_KIND[dataset.kind] != "text-generation":
            raise fail("workload.dataset", f"Dataset '{dataset.name}' is a {dataset.kind} dataset; a tune serves "
                                           "a qa or text dataset's prompts.")
        workload["dataset"] = dataset.name
        workload["dataset_version"] = dataset_version_of(dataset, workload.get("dataset_version")).number
    else:
        synth = workload.get("synthetic")
        if not isinstance(synth, dict):
            raise fail("workload.synthetic", "must be an object with prompt_tokens and output_tokens ranges")
        bad = sorted(set(synth) - set(SYNTHETIC_KEYS))
        if bad:
            raise fail(f"workload.synthetic.{bad[0]}", f"unknown key; known: {', '.join(SYNTHETIC_KEYS)}")
        synth = {**DEFAULT_WORKLOAD["synthetic"], **synth}
        prompt = _range(synth["prompt_tokens"], "workload.synthetic.prompt_tokens", model_len)
        output = _range(synth["output_tokens"], "workload.synthetic.output_tokens", model_len)
        if prompt[1] + output[1] > model_len:
            raise fail("workload.synthetic.output_tokens", f"The longest prompt plus answer ({prompt[1] + output[1]} "
                                                           f"tokens) exceeds the model's context of {model_len}.")
        workload["synthetic"] = {"prompt_tokens": prompt, "output_tokens": output}
        workload.pop("dataset_version", None)
    levels = workload["concurrency"]
    levels = [levels] if _int(levels) else levels
    if (not isinstance(levels, list) or not levels or len(levels) > 6
            or not all(_int(c) and 1 <= c <= MAX_CONCURRENCY for c in levels)):
        raise fail("workload.concurrency", f"Give up to 6 concurrency levels between 1 and {MAX_CONCURRENCY}, "
                                           "e.g. [1, 8].")
    workload["concurrency"] = sorted(set(levels))
    if not _int(workload["requests"]) or not 2 <= workload["requests"] <= MAX_REQUESTS:
        raise fail("workload.requests", f"Give the requests per trial and level as a number from 2 to {MAX_REQUESTS}.")
    return workload


def _chats(value: Any, model_len: int) -> list[dict[str, Any]]:
    """A traffic sample: 1 to MAX_REQUESTS chats, each `messages` (role/content strings) and `max_tokens`."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_REQUESTS:
        raise fail("workload.chats", f"must be a list of 1 to {MAX_REQUESTS} chats, each "
                                     '{"messages": [{"role": "user", "content": "..."}], "max_tokens": 64}')
    out = []
    for i, chat in enumerate(value):
        field = f"workload.chats[{i}]"
        if not isinstance(chat, dict) or set(chat) - {"messages", "max_tokens"}:
            raise fail(field, 'must be an object with "messages" and "max_tokens" only')
        messages = chat.get("messages")
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and set(m) == {"role", "content"}
                           and m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str)
                           for m in messages)):
            raise fail(f"{field}.messages", "must be a non-empty list of {\"role\": system|user|assistant, "
                                            "\"content\": text} objects")
        if sum(len(m["content"]) for m in messages) > MAX_CHAT_CHARS:
            raise fail(f"{field}.messages", f"is longer than {MAX_CHAT_CHARS:,} characters; send a shorter sample")
        max_tokens = chat.get("max_tokens")
        if not _int(max_tokens) or not 1 <= max_tokens < model_len:
            raise fail(f"{field}.max_tokens", f"must be a whole number from 1 to {model_len - 1} (the model's context)")
        out.append({"messages": messages, "max_tokens": max_tokens})
    if sum(len(m["content"]) for c in out for m in c["messages"]) > MAX_SAMPLE_CHARS:
        raise fail("workload.chats", f"holds more than {MAX_SAMPLE_CHARS:,} characters in all; send fewer or shorter chats")
    return out


def _constraints(value: Any, version: Any, workload: dict[str, Any]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("constraints", f"must be an object with any of {', '.join(CONSTRAINTS)}")
    out: dict[str, Any] = {}
    for key, limit in value.items():
        if key not in CONSTRAINTS:
            raise fail(f"constraints.{key}", f"unknown constraint; known: {', '.join(CONSTRAINTS)}")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
            raise fail(f"constraints.{key}", "must be a positive number")
        out[key] = limit
    params = version.parameter_count or 0
    shortest = workload["synthetic"]["prompt_tokens"][0] if "synthetic" in workload else 1
    if "ttft_p99_ms" in out and params and out["ttft_p99_ms"] < forward_floor_ms(params, shortest):
        raise fail("constraints.ttft_p99_ms", f"{out['ttft_p99_ms']:g} ms is below one forward pass of this "
                                              f"{params:,}-parameter model ({forward_floor_ms(params, shortest):.3g} "
                                              "ms at best); no setting can meet it.")
    if "max_perplexity_ratio" in out and out["max_perplexity_ratio"] < 1:
        raise fail("constraints.max_perplexity_ratio", "must be at least 1 (the unquantized model's own ratio).")
    return out


def _llamacpp_problem(version: Any, task: str) -> str | None:
    """Why the llamacpp runtime cannot serve this version (no GGUF, an architecture it cannot run), or None."""
    from rest_framework.exceptions import ValidationError

    from console.deployments.config import check_runtime

    try:
        check_runtime({"engine": {"runtime": "llamacpp"}}, version, task)
    except ValidationError as exc:
        return str(next(iter(exc.detail.values()))[0] if isinstance(exc.detail, dict) else exc.detail)
    return None


def validate_params(params: dict[str, Any], user: Any) -> dict[str, Any]:
    """A `tune` job's params, complete and checked; each refusal names the field."""
    from console.deployments.config import ENGINE_FIELDS
    from console.deployments.config import normalize as normalize_config

    if not isinstance(params, dict):
        raise fail("params", "must be an object")
    params = {k: v for k, v in params.items() if k not in DERIVED}  # a re-run's: worked out again below
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise fail(unknown[0], f"unknown parameter; a tune takes {', '.join(PARAMS)}")
    deployment, model, version = _target(params)
    if model.task != "text-generation":
        raise fail("deployment" if deployment else "model", f"'{model.name}' is a {model.task} model; tuning "
                                                            "measures text generation.")
    model_len = 2048
    workload = _workload(params.get("workload"), model_len)
    objective = params.get("objective", "throughput")
    if objective not in OBJECTIVES:
        raise fail("objective", f"one of {', '.join(OBJECTIVES)}, got {objective!r}")
    constraints = _constraints(params.get("constraints"), version, workload)
    space_in = params.get("space", {})
    if not isinstance(space_in, dict):
        raise fail("space", f"must be an object of lists, keys among {', '.join(SPACE_FIELDS)}")
    try:
        space = check_space(space_in)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise fail(field, message) from exc
    gguf_problem = _llamacpp_problem(version, model.task)
    if "runtime" not in space_in and gguf_problem is None:  # llama.cpp can run it: let the tuner find out
        space["runtime"] = ["torch", "llamacpp"]
        if "threads" not in space_in:
            space["threads"] = threads_candidates(os.cpu_count() or 1)
    if "llamacpp" in space["runtime"] and gguf_problem is not None:
        raise fail("space.runtime", gguf_problem)
    limit = constraints.get("max_memory_bytes")
    if limit and version.parameter_count:
        cheapest = min(memory_estimate(version.parameter_count, {"quantization": q, "kv_cache_bytes": kv})
                       for q in space["quantization"] for kv in space["kv_cache_bytes"])
        if cheapest > limit:
            raise fail("constraints.max_memory_bytes", f"Even the smallest candidate needs about {cheapest:,} bytes "
                                                       f"(weights + KV cache), over {limit:,}; no worker setting "
                                                       "fits. Raise it or add smaller kv_cache_bytes to the space.")
    max_trials = params.get("max_trials", 6)
    if not _int(max_trials) or not 1 <= max_trials <= MAX_TRIALS:
        raise fail("max_trials", f"Give the number of settings to try, from 1 to {MAX_TRIALS}.")
    base_engine = (deployment.config if deployment else normalize_config({}))["engine"]
    baseline = {k: base_engine.get(k, ENGINE_FIELDS[k]) for k in SPACE_FIELDS}
    if baseline["runtime"] == "auto":
        baseline["runtime"] = "torch" if "torch" in space["runtime"] else space["runtime"][0]
    return {"deployment": deployment.name if deployment else None, "model": model.name, "version": version.number,
            "workload": workload, "objective": objective, "constraints": constraints, "space": space,
            "max_trials": max_trials, "baseline": baseline, "base_engine": base_engine}


def remove_trials(job: Any) -> int:
    """Delete a tune job's transient trial deployments (workers/tune_trials.py); their replicas let go within a
    heartbeat. Run when the job ends whatever way, also as its kind's on_failed (a cancel, the reaper)."""
    from console.deployments.models import Deployment

    return len([d.delete() for d in Deployment.everything.filter(tune_job_id=job.pk)])


# -- applying ------------------------------------------------------------------------------------------
class NotApplicable(Exception):
    def __init__(self, message: str, field: str = "job", status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


def apply(deployment: Any, job: Any, actor: Any) -> dict[str, Any]:
    """Move `deployment` to the settings `job` recommends (the replicas hot-swap), audited with the figures
    before (the baseline trial) and after (the recommended trial). Returns the engine settings applied."""
    from console.audit.models import record
    from console.jobs.choices import JobStatus

    if job.kind != "tune":
        raise NotApplicable(f"Job #{job.pk} is a {job.kind} job, not a tune.")
    if job.status != JobStatus.SUCCEEDED:
        raise NotApplicable(f"Job #{job.pk} is {job.status}; only a finished tune can be applied.")
    if job.params.get("model") != deployment.model.name:
        raise NotApplicable(f"Job #{job.pk} tuned model '{job.params.get('model')}', not this deployment's "
                            f"'{deployment.model.name}'.")
    result = job.result or {}
    recommended = result.get("recommended")
    if recommended is None:
        raise NotApplicable(f"Job #{job.pk} found no settings within its constraints; nothing to apply.")
    trials = {t["number"]: t for t in result.get("trials", [])}
    after = trials.get(recommended, {})
    before = trials.get(1, {})
    settings = dict(after["settings"])
    with transaction.atomic():
        old = dict(deployment.config.get("engine", {}))
        deployment.change(actor, config={"engine": settings})
        record(actor, "deployment.apply_tune", deployment, job=job.pk, trial=recommended,
               before={k: old.get(k) for k in settings}, after=settings,
               figures_before=before.get("figures", {}), figures_after=after.get("figures", {}))
    return settings
