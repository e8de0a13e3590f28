"""Token attributions with Captum: which input tokens (or words) made the model produce each output token.

Causal LMs (text generation), per output token, towards its log-probability given the prompt and the
output tokens before it (Captum's `LLMAttribution(..., forward_in_tokens=False)` semantics: one forward
over prompt + answer, teacher-forced, which equals the uncached token-by-token result):

- `feature_ablation` (default): replace each feature's tokens by a baseline token; attribution = the
  drop in log-probability. Captum's `FeatureAblation` over a 0/1 feature mask, with our own batched
  forward (`perturbations_per_eval` = batch size: many perturbed prompts share one forward).
- `shapley`: Captum's `ShapleyValueSampling` over the same mask and forward.
- `integrated_gradients`: integrated gradients on the token embeddings (what Captum's
  `LayerIntegratedGradients` on the embedding layer computes, Gauss-Legendre steps): every step of the
  path goes through ONE batched forward, then one backward per output token, instead of Captum's
  forward + backward per output token.

Encoders (text classification): integrated gradients on the token embeddings towards the probability
of the predicted (or a named) label.

The forward never goes through hooks on shared modules: for the engine's causal LMs it runs the
engine's own layer stack (`LLMEngine.stack`: the served weights, quantized or not) through the engine's one
forward (`engine.runner.dense_forward`) without a
KV cache, so the engine's concurrent batches are untouched; encoders take `inputs_embeds`. Given a
`pause`, every forward runs in short chunks with `pause` called before each (engine/pacer.py): that is
how Explain lets the serving engine go first and sees a cancel.
Plain Python and torch; no Django, no Celery."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from engine.pacer import Pacer, Pause
from engine.runner import dense_forward

METHODS = ("feature_ablation", "integrated_gradients", "shapley")
SPANS = ("prompt", "user")  # every prompt token, or only the text of the user messages
DEFAULTS = {"batch_size": 32, "steps": 16, "samples": 4}
FORWARD_TOKENS = 8192  # tokens per batched forward (perturbation methods): bounds activations and logits
GRAD_TOKENS = 1024  # tokens per batched forward + backward (integrated gradients keeps ~1 MB per token on SmolLM2)

Progress = Callable[[int, int], None]  # (sequences done, sequences planned)


class AttributionError(ValueError):
    """The request cannot be explained as asked (the message says why and what to do)."""


# --- the input: exact token ids, what each shows as, and the features attributions are grouped by ------

@dataclass(slots=True)
class Prompt:
    ids: list[int]  # exactly what the engine encodes
    tokens: list[str]  # each token as it reads in the text
    features: list[list[int]]  # token positions per feature (a token, or a word)
    labels: list[str]  # one per feature

    @property
    def positions(self) -> list[int]:
        return [p for group in self.features for p in group]


def _render(tokenizer: Any, prompt: str | list[dict[str, str]]) -> tuple[str, bool]:
    """The text the engine tokenizes (see LLMEngine.encode) and whether special tokens are added."""
    if isinstance(prompt, str):
        return prompt, True
    if not getattr(tokenizer, "chat_template", None):
        raise AttributionError("this model's tokenizer has no chat template; send a plain prompt instead of messages")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), False


def _user_ranges(text: str, prompt: str | list[dict[str, str]]) -> list[tuple[int, int]]:
    """Character ranges of the user messages' text inside the rendered chat (the whole text for a prompt)."""
    if isinstance(prompt, str):
        return [(0, len(text))]
    ranges, cursor = [], 0
    for message in prompt:
        content = message.get("content") or ""
        at = text.find(content, cursor) if content else -1
        if at < 0:
            continue
        cursor = at + len(content)
        if message.get("role") == "user":
            ranges.append((at, cursor))
    if not ranges:
        raise AttributionError("there is no user message text to attribute to; use span 'prompt'")
    return ranges


def _starts_word(text: str, prev: str) -> bool:
    if not prev or not text:
        return True
    if text[0].isspace() or prev[-1].isspace():
        return True
    return not (text[0].isalnum() and prev[-1].isalnum())


def _group_words(chosen: list[int], text: str, offsets: list[tuple[int, int]], special: list[bool]) -> list[list[int]]:
    """Consecutive tokens form one word when nothing separates them in the text (no gap, no space, no
    punctuation on either side, neither is a special token)."""
    groups: list[list[int]] = []
    for i in chosen:
        prev = i - 1
        glued = (groups and groups[-1][-1] == prev and not special[i] and not special[prev]
                 and offsets[i][0] == offsets[prev][1]
                 and not _starts_word(text[offsets[i][0]:offsets[i][1]], text[offsets[prev][0]:offsets[prev][1]]))
        if glued:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def build_prompt(tokenizer: Any, prompt: str | list[dict[str, str]], *, span: str = "prompt",
                 words: bool = False) -> Prompt:
    """Tokenize `prompt` exactly as the engine does, and pick the features: each token in `span`, or
    each word (consecutive tokens without a space or punctuation between them) when `words`."""
    if span not in SPANS:
        raise AttributionError(f"span must be one of {', '.join(SPANS)}, got {span!r}")
    text, special = _render(tokenizer, prompt)
    if not getattr(tokenizer, "is_fast", False):
        raise AttributionError("attribution needs a fast (Rust) tokenizer for token offsets; this model has none")
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if not ids:
        raise AttributionError("the prompt is empty")
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    raw = tokenizer.convert_ids_to_tokens(ids)
    tokens = [text[a:b] if b > a else raw[i] for i, (a, b) in enumerate(offsets)]
    if span == "prompt":
        chosen = list(range(len(ids)))
    else:
        ranges = _user_ranges(text, prompt)
        chosen = [i for i, (a, b) in enumerate(offsets)
                  if b > a and ids[i] not in special_ids and any(lo <= a and b <= hi for lo, hi in ranges)]
        if not chosen:
            raise AttributionError("the user messages hold no tokens to attribute to; use span 'prompt'")
    special = [i in special_ids for i in ids]
    features = _group_words(chosen, text, offsets, special) if words else [[i] for i in chosen]
    labels = ["".join(tokens[i] for i in group) for group in features]
    if words:
        labels = [label.strip() or label for label in labels]
    return Prompt(ids, tokens, features, labels)


# --- the forward: log-probabilities of the answer's tokens for a batch of (perturbed) prompts ----------

class CausalForward:
    """Teacher-forced log-probabilities of `targets` after `prompt`, for a batch of prompt variants.

    Runs the engine's layer stack (LlamaStack / GPT2Stack) through the engine's one forward
    (`engine.runner.dense_forward`, which perplexity also uses), from token embeddings so integrated gradients
    can move along them. Every variant has the same length (tokens are replaced, never removed), so a batch is
    a dense [B, L] block with a causal mask and no padding."""

    def __init__(self, stack: Any):
        self.stack = stack
        self.device = next(stack.parameters()).device

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, L, H] (positions are added in the forward, as the model does)."""
        return self.stack.token_embeddings(ids)

    def logits(self, x: torch.Tensor, rows: slice) -> torch.Tensor:
        """Logits [B, len(rows), V] at positions `rows` from token embeddings x [B, L, H]."""
        return self.stack.logits(dense_forward(self.stack, x)[:, rows])

    def logprobs(self, x: torch.Tensor, n_prompt: int, targets: torch.Tensor) -> torch.Tensor:
        """[B, T]: log p(targets[t] | prompt variant, targets[:t]); x holds prompt + targets embedded."""
        rows = slice(n_prompt - 1, n_prompt - 1 + len(targets))
        lp = torch.log_softmax(self.logits(x, rows).float(), dim=-1)  # [B, T, V]
        return lp.gather(2, targets.view(1, -1, 1).expand(x.shape[0], -1, 1)).squeeze(2)


# --- results -----------------------------------------------------------------------------------------

@dataclass(slots=True)
class Attribution:
    input_tokens: list[str]  # one per feature (token or word)
    output_tokens: list[str]
    attributions: list[list[float]]  # one row per output token, one column per input feature
    method: str
    forward_passes: int  # sequences run through the model
    batches: int  # forward calls they were packed into
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def fit_batch(method: str, batch_size: int, length: int) -> int:
    """Sequences per forward: at most `batch_size`, and few enough that long prompts stay in memory."""
    budget = GRAD_TOKENS if method == "integrated_gradients" else FORWARD_TOKENS
    return max(1, min(batch_size, budget // max(length, 1)))


def estimate(method: str, n_features: int, n_targets: int, *, batch_size: int = DEFAULTS["batch_size"],
             steps: int = DEFAULTS["steps"], samples: int = DEFAULTS["samples"], length: int = 0) -> dict[str, int]:
    """Sequences the method runs through the model and the batched forward calls that carry them
    (plus, for integrated gradients, one backward pass per output token and batch). `length`: prompt +
    answer tokens, which may shrink the batches."""
    batch_size = fit_batch(method, batch_size, length) if length else batch_size
    if method == "feature_ablation":
        return {"sequences": 1 + n_features, "batches": 1 + math.ceil(n_features / batch_size), "backwards": 0}
    if method == "shapley":
        return {"sequences": 1 + samples * n_features,
                "batches": 1 + samples * math.ceil(n_features / batch_size), "backwards": 0}
    if method == "integrated_gradients":
        return {"sequences": steps, "batches": math.ceil(steps / batch_size), "backwards": n_targets}
    raise AttributionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i], skip_special_tokens=False) for i in ids]


def baseline_token(tokenizer: Any) -> int:
    """What an ablated token becomes: the unknown token, else padding, else id 0 (Captum's default)."""
    for name in ("unk_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def explain_generation(model: Any, tokenizer: Any, prompt: Prompt, targets: list[int], method: str = "feature_ablation",
                       *, baseline_id: int | None = None, batch_size: int = DEFAULTS["batch_size"],
                       steps: int = DEFAULTS["steps"], samples: int = DEFAULTS["samples"], seed: int = 0,
                       progress: Progress | None = None, pause: Pause | None = None) -> Attribution:
    """Attribute each of `targets` (the answer's exact token ids) to the features of `prompt`.
    `model`: the engine's layer stack (`LLMEngine.stack`). With `pause`, every
    forward runs in short chunks (see Pacer) and `pause` is called before each."""
    if not targets:
        raise AttributionError("there is no answer to explain (no output tokens)")
    batch_size = fit_batch(method, batch_size, len(prompt.ids) + len(targets))
    plan = estimate(method, len(prompt.features), len(targets), batch_size=batch_size, steps=steps, samples=samples)
    fwd = CausalForward(model)
    baseline_id = baseline_token(tokenizer) if baseline_id is None else baseline_id
    dev = fwd.device
    full = torch.tensor(prompt.ids + list(targets), device=dev)  # [L]
    target_t = torch.tensor(list(targets), device=dev)
    n_prompt = len(prompt.ids)
    counter = _Counter(len(targets) * steps if method == "integrated_gradients" else plan["sequences"], progress)
    pacer = Pacer(pause) if pause is not None else None
    started = time.perf_counter()
    if method == "integrated_gradients":
        rows = _integrated_gradients(fwd, full, n_prompt, target_t, prompt, baseline_id, steps, batch_size, counter,
                                     pacer)
        batches = plan["batches"]
    else:
        rows, batches = _perturb(fwd, full, n_prompt, target_t, prompt, baseline_id, method, batch_size, samples,
                                 seed, counter, pacer)
    return Attribution(prompt.labels, token_texts(tokenizer, list(targets)), rows, method, counter.sequences,
                       batches, round(time.perf_counter() - started, 3),
                       {"baseline_token": tokenizer.convert_ids_to_tokens([baseline_id])[0]})


class _Counter:
    def __init__(self, planned: int, progress: Progress | None):
        self.planned, self.progress, self.sequences, self.calls, self.done = planned, progress, 0, 0, 0

    def add(self, sequences: int, work: int | None = None) -> None:
        self.sequences += sequences
        self.calls += 1
        self.done += sequences if work is None else work
        if self.progress is not None:
            self.progress(min(self.done, self.planned), self.planned)


def _perturb(fwd: CausalForward, full: torch.Tensor, n_prompt: int, targets: torch.Tensor, prompt: Prompt,
             baseline_id: int, method: str, batch_size: int, samples: int, seed: int,
             counter: _Counter, pacer: Pacer | None = None) -> tuple[list[list[float]], int]:
    from captum.attr import FeatureAblation, ShapleyValueSampling

    n = len(prompt.features)
    # feature f off → its positions take the baseline token: owner[p] = f for the prompt positions
    owner = torch.full((len(full),), -1, dtype=torch.long, device=full.device)
    for f, group in enumerate(prompt.features):
        owner[group] = f

    @torch.no_grad()
    def forward(mask: torch.Tensor) -> torch.Tensor:  # mask: [B, F], 1 = kept → [B, T]
        B = mask.shape[0]
        ids = full.expand(B, -1).clone()
        in_span = owner >= 0
        off = torch.zeros_like(ids, dtype=torch.bool)
        off[:, in_span] = mask[:, owner[in_span]] == 0
        ids[off] = baseline_id
        if pacer is None:
            out = fwd.logprobs(fwd.embed(ids), n_prompt, targets)
        else:
            out = pacer.run(B, ids.shape[1], lambda rows: fwd.logprobs(fwd.embed(ids[rows]), n_prompt, targets))
        counter.add(B)
        return out

    ones = torch.ones(1, n, dtype=torch.long, device=full.device)
    if method == "feature_ablation":
        attr = FeatureAblation(forward).attribute(ones, baselines=0, perturbations_per_eval=batch_size)
    else:
        torch.manual_seed(seed)
        attr = ShapleyValueSampling(forward).attribute(ones, baselines=0, n_samples=samples,
                                                       perturbations_per_eval=batch_size)
    rows = attr.reshape(len(targets), n).float().cpu()
    return rows.tolist(), counter.calls


def _path(steps: int) -> tuple[list[float], list[float]]:
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters("gausslegendre")
    return list(step_sizes(steps)), list(alphas(steps))


def _integrated_gradients(fwd: CausalForward, full: torch.Tensor, n_prompt: int, targets: torch.Tensor,
                          prompt: Prompt, baseline_id: int, steps: int, batch_size: int,
                          counter: _Counter, pacer: Pacer | None = None) -> list[list[float]]:
    positions = torch.tensor(prompt.positions, device=full.device)
    base_ids = full.clone()
    base_ids[positions] = baseline_id
    with torch.no_grad():
        x = fwd.embed(full[None]).detach()  # [1, L, H]
        base = fwd.embed(base_ids[None]).detach()
    weights, alphas = _path(steps)
    grads = _path_gradients(lambda e: fwd.logprobs(e, n_prompt, targets), x, base, alphas, weights, batch_size,
                            len(targets), counter, pacer)  # [T, L, H]
    per_token = (grads * (x - base)).sum(-1)  # [T, L]
    return _group(per_token, prompt.features)


def _path_gradients(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, base: torch.Tensor,
                    alphas: list[float], weights: list[float], batch_size: int, n_out: int,
                    counter: _Counter, pacer: Pacer | None = None) -> torch.Tensor:
    """Σ_s w_s · ∂out_t/∂x at x_s = base + α_s (x − base), for each output t: [T, L, H].
    One forward per batch of path points, then one backward per output (the graph is kept between them).
    With a pacer, batches are sized to its pace (a backward costs about two forwards)."""
    total = torch.zeros(n_out, *x.shape[1:], device=x.device)
    cost = x.shape[1] * (1 + 2 * n_out)  # token-forwards per path point
    start = 0
    while start < len(alphas):
        size = batch_size if pacer is None else pacer.rows(cost, min(batch_size, len(alphas) - start))
        if pacer is not None:
            pacer.pause()
        began = time.perf_counter()
        a = torch.tensor(alphas[start:start + size], device=x.device, dtype=x.dtype).view(-1, 1, 1)
        w = torch.tensor(weights[start:start + size], device=x.device, dtype=torch.float32).view(-1, 1, 1)
        start += size
        with torch.enable_grad():
            points = (base + a * (x - base)).requires_grad_(True)  # [S, L, H]
            out = forward(points)  # [S, T]
            if not out.requires_grad:
                raise AttributionError("integrated gradients needs gradients through the model, and this one "
                                       "gives none (quantized layers have no backward); use feature_ablation")
            for t in range(n_out):
                (g,) = torch.autograd.grad(out[:, t].sum(), points, retain_graph=t < n_out - 1)
                total[t] += (g.float() * w).sum(0)
                counter.add(len(a) if t == 0 else 0, work=len(a))
        if pacer is not None:
            pacer.measured(size * cost, time.perf_counter() - began)
    return total


def _group(per_token: torch.Tensor, features: list[list[int]]) -> list[list[float]]:
    """Sum token attributions [T, L] into feature columns [T, F] (integrated gradients is additive)."""
    cols = [per_token[:, group].sum(-1) for group in features]
    return torch.stack(cols, dim=1).float().cpu().tolist()


# --- encoders -------------------------------------------------------------------------------------------

def explain_classification(model: Any, tokenizer: Any, text: str, *, label: str | None = None, words: bool = False,
                           steps: int = 32, batch_size: int = DEFAULTS["batch_size"], max_length: int = 512,
                           progress: Progress | None = None, pause: Pause | None = None) -> Attribution:
    """Integrated gradients on the token embeddings towards the probability of `label` (default: the
    predicted one), for a sequence-classification model. Special tokens ([CLS], [SEP]) stay; the others
    move from the padding token's embedding to their own."""
    if not getattr(tokenizer, "is_fast", False):
        raise AttributionError("attribution needs a fast (Rust) tokenizer for token offsets; this model has none")
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    dev = next(model.parameters()).device
    id2label = model.config.id2label
    ids_t = torch.tensor([ids], device=dev)
    mask = torch.ones_like(ids_t)
    started = time.perf_counter()
    with torch.no_grad():
        probs = model(input_ids=ids_t, attention_mask=mask).logits.float().softmax(-1)[0]
    if label is None:
        index = int(probs.argmax())
    else:
        names = {str(v): int(k) for k, v in id2label.items()}
        if label not in names:
            raise AttributionError(f"unknown label {label!r}; this model's labels: {', '.join(names)}")
        index = names[label]
    special_ids = set(tokenizer.all_special_ids)
    raw = tokenizer.convert_ids_to_tokens(ids)
    tokens = [text[a:b] if b > a else raw[i] for i, (a, b) in enumerate(offsets)]
    real = [i for i, (a, b) in enumerate(offsets) if b > a and ids[i] not in special_ids]
    special = [i in special_ids for i in ids]
    features = _group_words(real, text, offsets, special) if words else [[i] for i in real]
    labels = [text[offsets[g[0]][0]:offsets[g[-1]][1]] if words else tokens[g[0]] for g in features]
    pad = tokenizer.pad_token_id if isinstance(tokenizer.pad_token_id, int) else 0
    base_ids = ids_t.clone()
    base_ids[0, real] = pad
    emb = model.get_input_embeddings()
    with torch.no_grad():
        x, base = emb(ids_t).detach(), emb(base_ids).detach()

    def forward(e: torch.Tensor) -> torch.Tensor:  # [S, L, H] → [S, 1]
        logits = model(inputs_embeds=e, attention_mask=mask.expand(e.shape[0], -1)).logits.float()
        return logits.softmax(-1)[:, index:index + 1]

    weights, alphas = _path(steps)
    counter = _Counter(steps, progress)  # one output: one backward per path point
    batch_size = fit_batch("integrated_gradients", batch_size, len(ids))
    grads = _path_gradients(forward, x, base, alphas, weights, batch_size, 1, counter,
                            Pacer(pause) if pause is not None else None)
    per_token = (grads * (x - base)).sum(-1)  # [1, L]
    return Attribution(labels, [str(id2label[index])], _group(per_token, features), "integrated_gradients",
                       counter.sequences, math.ceil(steps / batch_size), round(time.perf_counter() - started, 3),
                       {"label": str(id2label[index]), "score": float(probs[index]),
                        "spans": [[offsets[g[0]][0], offsets[g[-1]][1]] for g in features]})
