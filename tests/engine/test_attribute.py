"""engine/attribute.py: exact tokens and features, the batched forward, and each method checked against
Captum itself and against the axioms it must satisfy; sanity on the real SmolLM2."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from engine import EngineConfig, LLMEngine, SamplingParams
from engine import attribute as A

SMALL_CACHE = EngineConfig(kv_cache_bytes=8 * 1024**2)


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path):  # type: ignore[no-untyped-def]
    with LLMEngine.from_pretrained(tiny_llama, SMALL_CACHE) as engine:
        yield engine


@pytest.fixture(scope="module")
def smol(smollm2_dir: Path):  # type: ignore[no-untyped-def]
    with LLMEngine.from_pretrained(smollm2_dir, SMALL_CACHE) as engine:
        yield engine


@pytest.fixture(scope="module")
def smol_hf(smollm2_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()


def hf_model(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def captum_input(tokenizer, ids: list[int]):  # type: ignore[no-untyped-def]
    """Captum's TextTokenInput holding exactly these token ids (not a re-tokenized string)."""
    from captum.attr import TextTokenInput

    inp = TextTokenInput("x", tokenizer, baselines=A.baseline_token(tokenizer))
    inp.inp_tensor = inp.itp_tensor = torch.tensor([ids])
    inp.values = tokenizer.convert_ids_to_tokens(ids)
    inp.n_itp_features = len(ids)
    return inp


# --- tokens and features ----------------------------------------------------------------------------------

def test_the_prompt_is_tokenized_exactly_as_the_engine_encodes_it(tiny):  # type: ignore[no-untyped-def]
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit, please."}]
    for source in (chat, "Once upon a time"):
        prompt = A.build_prompt(tiny.tokenizer, source)
        assert prompt.ids == tiny.encode(source)
        assert prompt.features == [[i] for i in range(len(prompt.ids))]
        assert len(prompt.labels) == len(prompt.ids)


def test_the_user_span_keeps_only_the_user_messages_text(tiny):  # type: ignore[no-untyped-def]
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit, please."}]
    prompt = A.build_prompt(tiny.tokenizer, chat, span="user")
    assert "".join(prompt.labels).replace(" ", "") == "Nameafruit,please."  # no template, no system prompt
    assert all(len(group) == 1 for group in prompt.features)


def test_word_grouping_joins_the_pieces_of_a_word_and_splits_punctuation(smol):  # type: ignore[no-untyped-def]
    chat = [{"role": "user", "content": "Unbelievably, tokenization splits words."}]
    tokens = A.build_prompt(smol.tokenizer, chat, span="user")
    words = A.build_prompt(smol.tokenizer, chat, span="user", words=True)
    assert words.labels == ["Unbelievably", ",", "tokenization", "splits", "words", "."]
    assert len(tokens.labels) > len(words.labels)
    assert sorted(words.positions) == sorted(tokens.positions)


def test_bad_options_are_refused_with_the_choices_named(tiny):  # type: ignore[no-untyped-def]
    with pytest.raises(A.AttributionError, match="span must be one of prompt, user"):
        A.build_prompt(tiny.tokenizer, "hi", span="middle")
    prompt = A.build_prompt(tiny.tokenizer, "hi there")
    with pytest.raises(A.AttributionError, match="method must be one of feature_ablation"):
        A.explain_generation(tiny.stack, tiny.tokenizer, prompt, [2000], "lime")
    with pytest.raises(A.AttributionError, match="no answer"):
        A.explain_generation(tiny.stack, tiny.tokenizer, prompt, [], "feature_ablation")


# --- the forward --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_the_batched_forward_over_the_engines_stack_equals_the_hf_model(which, request):  # type: ignore[no-untyped-def]
    folder = request.getfixturevalue(which)
    hf = hf_model(folder)
    with LLMEngine.from_pretrained(folder, SMALL_CACHE) as engine:
        ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 1012, 2017, 2064]] * 3)
        ids[1, 2] = 0
        ids[2, 4] = 0
        targets = ids[0, 5:]
        ours = A.CausalForward(engine.stack)
        with torch.no_grad():
            got = ours.logprobs(ours.embed(ids), 5, targets)
            hf_embedded = torch.log_softmax(hf(inputs_embeds=hf.get_input_embeddings()(ids)).logits[:, 4:7].float(), -1)
            direct = torch.log_softmax(hf(ids).logits[:, 4:7].float(), -1)
    want = direct.gather(2, targets.view(1, 3, 1).expand(3, 3, 1)).squeeze(2)
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hf_embedded, direct, atol=1e-5, rtol=1e-5)  # from embeddings = from ids


def test_serving_perplexity_and_attribution_give_the_same_log_probability(tiny):  # type: ignore[no-untyped-def]
    """The paged serving step, the uncached full forward (perplexity) and attribution's batched forward run
    the one stack forward: the greedy answer's first token and its log-probability agree through all three."""
    from engine.runner import full_forward

    prompt = A.build_prompt(tiny.tokenizer, "the quick brown fox jumps over the lazy dog")
    served = tiny.generate(prompt.ids, SamplingParams(max_new_tokens=1, ignore_eos=True, logprobs=True)).result(60)
    token = served.token_ids[0]
    full = torch.log_softmax(full_forward(tiny.stack, prompt.ids)[-1], -1)  # [V]
    fwd = A.CausalForward(tiny.stack)
    with torch.no_grad():
        batched = fwd.logprobs(fwd.embed(torch.tensor([prompt.ids + [token]] * 2)), len(prompt.ids),
                               torch.tensor([token]))  # [2, 1]
    assert token == int(full.argmax())
    assert served.logprobs[0].logprob == pytest.approx(float(full[token]), abs=1e-4)
    torch.testing.assert_close(batched, full[token].expand(2, 1), atol=1e-4, rtol=1e-4)


# --- the methods, against Captum and their axioms ------------------------------------------------------------

def test_feature_ablation_reports_the_forward_passes_it_ran_in_batches(tiny):  # type: ignore[no-untyped-def]
    prompt = A.build_prompt(tiny.tokenizer, "the quick brown fox jumps over the lazy dog")
    targets = tiny.generate(prompt.ids, SamplingParams(max_new_tokens=4, ignore_eos=True)).result(timeout=60).token_ids
    seen: list[tuple[int, int]] = []
    result = A.explain_generation(tiny.stack, tiny.tokenizer, prompt, targets, batch_size=4,
                                  progress=lambda done, planned: seen.append((done, planned)))
    plan = A.estimate("feature_ablation", len(prompt.features), len(targets), batch_size=4)
    assert (result.forward_passes, result.batches) == (plan["sequences"], plan["batches"])
    assert len(result.attributions) == len(targets) and all(len(r) == len(prompt.ids) for r in result.attributions)
    assert seen[-1] == (plan["sequences"], plan["sequences"]) and len(seen) == plan["batches"]
    one_by_one = A.explain_generation(tiny.stack, tiny.tokenizer, prompt, targets, batch_size=1)
    torch.testing.assert_close(torch.tensor(result.attributions), torch.tensor(one_by_one.attributions),
                               atol=1e-4, rtol=1e-4)


def test_shapley_values_of_each_output_token_add_up_to_all_minus_none(tiny):  # type: ignore[no-untyped-def]
    prompt = A.build_prompt(tiny.tokenizer, "a small random model", words=True)
    targets = [2000, 2001, 2002]
    result = A.explain_generation(tiny.stack, tiny.tokenizer, prompt, targets, "shapley", samples=3)
    fwd = A.CausalForward(tiny.stack)
    full = torch.tensor([prompt.ids + targets])
    none = full.clone()
    none[0, prompt.positions] = A.baseline_token(tiny.tokenizer)
    with torch.no_grad():
        lp = fwd.logprobs(fwd.embed(torch.cat([full, none])), len(prompt.ids), torch.tensor(targets))
    totals = torch.tensor(result.attributions).sum(1)
    torch.testing.assert_close(totals, lp[0] - lp[1], atol=1e-4, rtol=1e-4)  # efficiency holds per permutation


def test_integrated_gradients_add_up_to_the_change_along_the_path(tiny):  # type: ignore[no-untyped-def]
    prompt = A.build_prompt(tiny.tokenizer, "integrated gradients are complete")
    targets = [2000, 2001]
    result = A.explain_generation(tiny.stack, tiny.tokenizer, prompt, targets, "integrated_gradients", steps=64)
    fwd = A.CausalForward(tiny.stack)
    full = torch.tensor([prompt.ids + targets])
    none = full.clone()
    none[0, prompt.positions] = A.baseline_token(tiny.tokenizer)
    with torch.no_grad():
        lp = fwd.logprobs(fwd.embed(torch.cat([full, none])), len(prompt.ids), torch.tensor(targets))
    totals = torch.tensor(result.attributions).sum(1)
    torch.testing.assert_close(totals, lp[0] - lp[1], atol=0.02, rtol=0.02)


@pytest.mark.parametrize("method", ["shapley", "integrated_gradients"])
def test_paced_attribution_pauses_between_short_chunks_and_gives_the_same_answer(tiny, method, monkeypatch):  # type: ignore[no-untyped-def]
    from engine import pacer

    monkeypatch.setattr(pacer, "FIRST_CHUNK_TOKENS", 1)
    monkeypatch.setattr(pacer, "CHUNK_S", 1e-6)  # every chunk as small as it can be: one row
    prompt = A.build_prompt(tiny.tokenizer, "a small random model", words=True)
    targets = [2000, 2001, 2002]
    whole = A.explain_generation(tiny.stack, tiny.tokenizer, prompt, targets, method, samples=2, steps=8)
    pauses: list[int] = []
    paced = A.explain_generation(tiny.stack, tiny.tokenizer, prompt, targets, method, samples=2, steps=8,
                                 pause=lambda: pauses.append(1))
    assert len(pauses) == (1 + 2 * len(prompt.features) if method == "shapley" else 8)  # one per row
    torch.testing.assert_close(torch.tensor(paced.attributions), torch.tensor(whole.attributions), atol=1e-4,
                               rtol=1e-4)
    assert (paced.forward_passes, paced.batches) == (whole.forward_passes, whole.batches)


def test_a_pause_that_raises_stops_the_attribution_before_its_next_chunk(tiny):  # type: ignore[no-untyped-def]
    prompt = A.build_prompt(tiny.tokenizer, "stop when asked")
    calls = []

    def pause() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for the job's JobCancelled

    with pytest.raises(KeyboardInterrupt):
        A.explain_generation(tiny.stack, tiny.tokenizer, prompt, [2000], "feature_ablation", pause=pause)
    assert len(calls) == 2


@pytest.mark.slow
def test_feature_ablation_equals_captums_llm_attribution_on_the_same_tokens(smol, smol_hf):  # type: ignore[no-untyped-def]
    from captum.attr import FeatureAblation, LLMAttribution

    tok = smol.tokenizer
    prompt = A.build_prompt(tok, "Paris is the capital of")
    targets = smol.generate(prompt.ids, SamplingParams(max_new_tokens=3, ignore_eos=True)).result(timeout=60).token_ids
    ours = torch.tensor(A.explain_generation(smol.stack, tok, prompt, targets).attributions)
    captum = LLMAttribution(FeatureAblation(smol_hf), tok)
    inp = captum_input(tok, prompt.ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_sequence = captum.attribute(inp, target=torch.tensor(targets), forward_in_tokens=False).token_attr
        token_by_token = captum.attribute(inp, target=torch.tensor(targets), forward_in_tokens=True,
                                          use_cached_outputs=False).token_attr
    assert ours.shape == (len(targets), len(prompt.ids))
    torch.testing.assert_close(ours, by_sequence.float(), atol=2e-3, rtol=1e-3)
    # one teacher-forced forward gives what decoding token by token (uncached) gives, for 1/T of the forwards
    torch.testing.assert_close(by_sequence, token_by_token, atol=2e-3, rtol=1e-3)


@pytest.mark.slow
def test_integrated_gradients_equal_captums_layer_integrated_gradients_on_the_embeddings(smol, smol_hf):  # type: ignore[no-untyped-def]
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution

    tok = smol.tokenizer
    prompt = A.build_prompt(tok, "The sky is")
    targets = smol.generate(prompt.ids, SamplingParams(max_new_tokens=2, ignore_eos=True)).result(timeout=60).token_ids
    ours = torch.tensor(A.explain_generation(smol.stack, tok, prompt, targets, "integrated_gradients", steps=6).attributions)
    captum = LLMGradientAttribution(LayerIntegratedGradients(smol_hf, smol_hf.model.embed_tokens), tok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum.attribute(captum_input(tok, prompt.ids), target=torch.tensor(targets), n_steps=6).token_attr
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() < 1e-3 * scale


@pytest.mark.slow
def test_asked_to_repeat_a_word_the_answer_leans_most_on_that_word(smol):  # type: ignore[no-untyped-def]
    tok = smol.tokenizer
    chat = [{"role": "user", "content": "Repeat this word exactly: giraffe"}]
    prompt = A.build_prompt(tok, chat, span="user", words=True)
    done = smol.generate(chat, SamplingParams(max_new_tokens=6)).result(timeout=60)
    assert "iraffe" in done.text
    targets = done.token_ids[:4]
    result = A.explain_generation(smol.stack, tok, prompt, targets)
    first = next(i for i, t in enumerate(result.output_tokens) if "ir" in t or "G" in t or "g" in t)
    row = result.attributions[first]
    assert result.input_tokens[row.index(max(row))] == "giraffe", (result.output_tokens, result.input_tokens, row)


# --- encoders ----------------------------------------------------------------------------------------------------

def test_a_classifier_is_explained_towards_its_predicted_label_over_the_text(tmp_path):  # type: ignore[no-untyped-def]
    from engine.encoders import ClassificationEngine
    from tests.modelfactory import tiny_bert_dir

    engine = ClassificationEngine(tiny_bert_dir(tmp_path / "bert", num_labels=3))
    text = "The service was wonderful, truly."
    predicted = engine.classify([text])[0][0]
    result = A.explain_classification(engine.model, engine.tokenizer, text, words=True, steps=48)
    assert result.output_tokens == [predicted.label] and result.extra["label"] == predicted.label
    assert result.input_tokens == ["The", "service", "was", "wonderful", ",", "truly", "."]
    assert [text[a:b] for a, b in result.extra["spans"]] == result.input_tokens
    # completeness: the attributions add up to p(label | text) − p(label | all padding between [CLS] and [SEP])
    enc = engine.tokenizer(text, return_tensors="pt")
    base = enc["input_ids"].clone()
    base[0, 1:-1] = engine.tokenizer.pad_token_id
    with torch.no_grad():
        index = int(engine.model.config.label2id[predicted.label])
        p_text = engine.model(**enc).logits.softmax(-1)[0, index]
        p_base = engine.model(input_ids=base, attention_mask=enc["attention_mask"]).logits.softmax(-1)[0, index]
    assert sum(result.attributions[0]) == pytest.approx(float(p_text - p_base), abs=0.01)
    with pytest.raises(A.AttributionError, match="unknown label"):
        A.explain_classification(engine.model, engine.tokenizer, text, label="LABEL_9")


def test_long_prompts_get_smaller_batches_so_memory_stays_bounded():
    assert A.fit_batch("feature_ablation", 32, 48) == 32
    assert A.fit_batch("feature_ablation", 32, 600) == A.FORWARD_TOKENS // 600
    assert A.fit_batch("integrated_gradients", 32, 600) == 1
    plan = A.estimate("integrated_gradients", 512, 64, steps=16, length=576)
    assert plan == {"sequences": 16, "batches": 16, "backwards": 64}
    assert A.estimate("feature_ablation", 32, 16, length=48) == {"sequences": 33, "batches": 2, "backwards": 0}
