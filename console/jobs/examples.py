"""Request examples of POST /api/jobs/ shown in the OpenAPI schema, one per kind that documents its params."""

from drf_spectacular.utils import OpenApiExample

KIND_EXAMPLES = [
    OpenApiExample(
        "tune", request_only=True,
        description="Autotune a deployment's engine settings (successive halving over real measurements). params: "
                    "deployment (or model + version); workload: {dataset, dataset_version} of a qa or text dataset "
                    "or {synthetic: {prompt_tokens: [lo, hi], output_tokens: [lo, hi]}}, with concurrency (levels) "
                    "and requests (per trial and level); objective: throughput | latency; constraints: ttft_p99_ms, "
                    "itl_p99_ms, max_perplexity_ratio, max_memory_bytes; space: lists of runtime, quantization, "
                    "max_num_seqs, max_batch_tokens, kv_cache_bytes, threads; max_trials (1-24).",
        value={"kind": "tune", "params": {
            "deployment": "smollm2-135m-instruct", "objective": "throughput", "max_trials": 6,
            "workload": {"synthetic": {"prompt_tokens": [16, 128], "output_tokens": [16, 64]},
                         "concurrency": [1, 8], "requests": 24},
            "constraints": {"ttft_p99_ms": 3000, "max_perplexity_ratio": 1.2},
            "space": {"quantization": ["none", "int8"], "max_num_seqs": [8, 16, 32]}}}),
]
