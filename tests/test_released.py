"""The six released chat templates (verbatim, from the shared data) on tokenizers of each family's own kind
(tests/released.py): every number is computed on exactly the tokens training trained. The label mask is the assistant's
text and its end-of-turn token; a model that memorized items scores them as trained (choice scoring and perplexity),
in a chat and in a plain prompt; generation of a memorized answer reproduces it and stops there."""

import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

import released
from medsft.data import encoding, spans, templates
from medsft.evaluation import scoring
from medsft.generation import completion
from medsft.models.tokenizer import load_tokenizer
from medsft.recipe.keys import DataSpec
from medsft.serving import engine
from medsft import tasks
from medsft.tasks import Example

pytestmark = pytest.mark.skipif(not released.available(), reason=f"released chat templates absent: {released.TEMPLATES}")
needs_pubmedqa = pytest.mark.skipif(not released.PUBMEDQA.is_file(), reason=f"real PubMedQA data absent: {released.PUBMEDQA}")
FAMILIES = list(released.FAMILIES)
MAX_LENGTH = 128  # long abstracts are shortened from the left, their question kept, as training shortens them


@pytest.fixture(scope="session")
def released_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    built = {}

    def model(name: str):
        if name not in built:
            built[name] = released.build(released.FAMILIES[name], root / name.replace(".", "_"), hidden=32)
        return built[name]

    return model


@pytest.fixture(scope="session")
def memorized(released_models):
    """(family, chat) -> (model, tokenizer, task, rows, batch): a tiny model fully fine-tuned on 12 PubMedQA items until
    it holds them."""
    done = {}

    def get(name: str, chat: bool):
        if (name, chat) not in done:
            path = released_models(name)
            tokenizer = load_tokenizer(str(path))
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_pretrained(path)
            task, rows = tasks.get(DataSpec(task="pubmedqa", chat=chat)), released.pubmedqa_rows(12)
            batch = released.memorize(model, tokenizer, [task.example(r) for r in rows], MAX_LENGTH)
            done[name, chat] = model, tokenizer, task, rows, batch
        return done[name, chat]

    return get


def test_each_vocabulary_holds_both_spellings_and_a_template_picks_one(released_models):
    """The premise: a word alone and the same word where the template puts an answer are different tokens on the
    SentencePiece families (Phi-3's answer follows <|assistant|>\\n)."""
    for name in FAMILIES:
        tokenizer = load_tokenizer(str(released_models(name)))
        vocab = tokenizer.get_vocab()
        mark = "Ġ" if released.FAMILIES[name].kind == "byte" else "▁"
        assert all(w in vocab and mark + w in vocab for w in released.ANSWERS), name
    phi3 = load_tokenizer(str(released_models("phi3")))
    ids = templates.chat_ids(phi3, [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}])
    assert phi3.convert_ids_to_tokens(ids[-4:]) == ["yes", "<|end|>", "<0x0A>", "<|endoftext|>"]
    assert phi3.convert_ids_to_tokens(phi3("yes", add_special_tokens=False)["input_ids"]) == ["▁yes"]


def oracle_mask(tokenizer, family, messages) -> list[int]:
    """Independently of medsft's method: in the template's text, each assistant turn's content (as the template writes
    it) and the end-of-turn token after it; every other character untrained (a think block, a trailing newline or
    EOS, the system and user turns)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans_, cursor = [], 0
    for m in messages:
        content = m["content"].strip()
        if m["role"] == "user":  # (a system turn may be written anywhere: Mistral puts it in the last user turn)
            cursor = text.index(content, cursor) + len(content)
        if m["role"] != "assistant":
            continue
        start = text.index(content, cursor)
        end = text.index(family.end_of_turn, start + len(content)) + len(family.end_of_turn)
        spans_.append((start, end))
        cursor = end
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [int(any(a < e and b > s for s, e in spans_) and b > a) for a, b in encoded["offset_mapping"]]


CONVERSATION = [{"role": "user", "content": "Is the patient febrile?"}, {"role": "assistant", "content": "Yes, 38.9 C."},
                {"role": "user", "content": "Pneumonia on the X-ray?"}, {"role": "assistant", "content": "No consolidation."}]


@pytest.mark.parametrize("name", FAMILIES)
def test_the_label_mask_is_the_assistant_text_and_its_end_of_turn(released_models, name):
    family = released.FAMILIES[name]
    tokenizer = load_tokenizer(str(released_models(name)))
    system = [{"role": "system", "content": "Answer briefly."}] if family.system else []
    encoder = encoding.Encoder(tokenizer, 1024)
    [row], _ = encoder(Example(messages=[*system, *CONVERSATION]))
    assert [int(x != encoding.IGNORE) for x in row["labels"]] == oracle_mask(tokenizer, family, [*system, *CONVERSATION])
    prompt = [*system, {"role": "user", "content": "Abstract: fever.\n\nQuestion: Febrile?\nAnswer (yes, no or maybe):"}]
    [row], _ = encoder(Example(prompt, [{"role": "assistant", "content": "yes"}]))
    trained = [t for t in row["labels"] if t != encoding.IGNORE]
    eot = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert tokenizer.convert_ids_to_tokens(trained[:-1]) in (["yes"], ["▁yes"]) and trained[-1] == eot
    assert [int(x != encoding.IGNORE) for x in row["labels"]] == oracle_mask(tokenizer, family, prompt + [{"role": "assistant", "content": "yes"}])


@needs_pubmedqa
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("name", FAMILIES)
def test_memorized_items_are_scored_as_trained(memorized, name, chat):
    """Choice scoring picks each memorized answer; the perplexity scorer's log-likelihoods are the training loss's own
    numbers, token for token. (Before: Phi-3's and Qwen3's chats scored 33%: the answer tokenized alone, "▁yes", and
    Qwen3's answer scored before the think block its template writes.)"""
    model, tokenizer, task, rows, batch = memorized(name, chat)
    predictions = scoring.score_choices(model, tokenizer, task, rows, MAX_LENGTH)
    accuracy = sum(p["prediction"] == p["gold"] for p in predictions) / len(rows)
    assert accuracy >= 0.9, (name, chat, accuracy, batch["steps"])
    logliks, counts = scoring.item_logliks(model, tokenizer, task, rows, MAX_LENGTH)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    log_probs = out.logits[:, :-1].float().log_softmax(-1)
    target = batch["labels"][:, 1:]
    kept = target != -100
    per_token = log_probs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * kept
    assert counts == kept.sum(1).tolist()  # exactly the trained tokens, no more and no fewer
    torch.testing.assert_close(torch.tensor(logliks), per_token.sum(1), atol=1e-3, rtol=1e-4)


@needs_pubmedqa
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("name", FAMILIES)
def test_generation_of_a_memorized_answer_reproduces_it_and_stops(memorized, name, chat):
    """From the prompt training trained the answer after (shortened as training shortened it): the answer, then a
    stop at the family's end of turn (or EOS), in generate (the panels, the generate command) and in the server's
    engine."""
    model, tokenizer, task, rows, _ = memorized(name, chat)
    encoder = encoding.Encoder(tokenizer, MAX_LENGTH)
    for row in rows[:3]:
        span, _ = encoder.span(task.example(row))
        prompt = span.ids[: span.start]
        [text] = completion.generate(model, tokenizer, [prompt], max_new_tokens=6)
        assert text.strip() == row["final_decision"]
        done = threading.Event()
        job = engine.Job(list(prompt), 6, on_event=lambda text, finished: finished and done.set())
        engine.Engine(model, tokenizer, max_batch=1).submit(job)
        assert done.wait(60) and (job.finish_reason, job.tokens) == ("stop", span.ids[span.start : span.stop])
        assert job.text.strip() == row["final_decision"]


@needs_pubmedqa
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("name", ["qwen3", "phi3", "llama3.1"])
def test_generated_answers_of_memorized_items_are_read_strictly_and_agree_with_likelihood(memorized, name, chat):
    """scoring: generate on items the model memorized: the reply, generated after the prompt training trained the answer
    after (Qwen3's think block, Phi-3's SentencePiece "yes"), states the answer; likelihood scoring picks the same."""
    from medsft.evaluation import generative

    model, tokenizer, task, rows, _ = memorized(name, chat)
    generated = generative.score_generated(model, tokenizer, task, rows, MAX_LENGTH, 8, generative.Generation(8))
    metrics = generative.generated_metrics(generated, task.labels(), 0)
    assert metrics["accuracy"] >= 0.9 and metrics["unparseable"] == 0, (name, chat, [g["reply"] for g in generated])
    likelihood = scoring.score_choices(model, tokenizer, task, rows, MAX_LENGTH)
    agree = sum(g["prediction"] == s["prediction"] for g, s in zip(generated, likelihood)) / len(rows)
    assert agree >= 0.9


@needs_pubmedqa
def test_an_untrained_model_is_reported_unparseable_not_mapped_to_an_option(released_models):
    """Random weights answer nothing: most replies name no option, and they count wrong (strict accuracy is the share of
    stated right answers, not the argmax a likelihood scorer would give every item)."""
    from medsft.evaluation import generative

    path = released_models("llama3.1")
    tokenizer, model = load_tokenizer(str(path)), AutoModelForCausalLM.from_pretrained(path)
    task, rows = tasks.get(DataSpec(task="pubmedqa", chat=True)), released.pubmedqa_rows(12)
    generated = generative.score_generated(model, tokenizer, task, rows, MAX_LENGTH, 8, generative.Generation(8))
    metrics = generative.generated_metrics(generated, task.labels(), 0)
    stated = sum(g["prediction"] is not None for g in generated)
    assert metrics["unparseable"] > 0.5 and metrics["accuracy"] <= stated / len(rows) < 0.5
    assert metrics["accuracy"] == sum(g["prediction"] == g["gold"] for g in generated) / len(rows)
    assert all(g["prediction"] is None or g["prediction"] in task.labels() for g in generated)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_generation_prompt_is_what_training_trains_the_answer_after(released_models, name):
    """Scoring, generate and serve start where training's trained span starts: for Qwen3, after the empty think block
    its template writes before a final answer (the template's own generation prompt stops before it)."""
    tokenizer = load_tokenizer(str(released_models(name)))
    system = [{"role": "system", "content": "Answer briefly."}] if released.FAMILIES[name].system else []
    prompt = [*system, {"role": "user", "content": "Febrile?"}]
    [row], _ = encoding.Encoder(tokenizer, None)(Example(prompt, [{"role": "assistant", "content": "no"}]))
    first_trained = next(i for i, label in enumerate(row["labels"]) if label != encoding.IGNORE)
    assert spans.generation_prompt(tokenizer, prompt) == row["input_ids"][:first_trained]
    if name == "qwen3":
        assert tokenizer.decode(row["input_ids"][:first_trained]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def _trained_run(released_models, write_recipe, name: str, kwargs: dict):
    """A run of the family's model trained one step on chat items with `chat_template_kwargs`, and its first test row."""
    from medsft.__main__ import main
    from medsft.models import inference
    from medsft.recipe.parser import parse_recipe
    from medsft.training import prepare

    recipe_path = write_recipe(model_name_or_path=str(released_models(name)), chat=True, chat_template_kwargs=kwargs,
                               max_steps=1, eval_after_train=False, sample_count=0, max_length=512)
    assert main([str(recipe_path)]) == 0
    prepared = prepare.prepare(parse_recipe([str(recipe_path)]))
    loaded = inference.load(str(recipe_path.parent / "out"))
    return prepared, loaded


def _served_ids(loaded, messages: list[dict], **body) -> list[int]:
    """The prompt ids the server hands its engine for a chat request."""
    from fastapi.testclient import TestClient

    from medsft.serving import server

    app = server.create_app(loaded)
    seen = []
    submit = app.state.engine.submit

    def spy(job):
        seen.append(list(job.ids))
        return submit(job)

    app.state.engine.submit = spy
    reply = TestClient(app).post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1, **body})
    assert reply.status_code == 200, reply.text
    return seen[0]


@pytest.mark.parametrize("name, kwargs, visible", [("llama3.1", {"date_string": "04 Dec 2026"}, "Today Date: 04 Dec 2026"),
                                                   ("qwen3", {"enable_thinking": False}, "<think>\n\n</think>\n\n")])
def test_chat_template_kwargs_reach_training_scoring_generate_and_serve(released_models, write_recipe, name, kwargs, visible):
    """One run trained with chat_template_kwargs: the prompt its training trained the answer after, the prompt its
    scorer scores the choices after, the prompt `generate --chat` and the server generate from: the same ids, in which
    the keywords show (Llama-3.1's date; Qwen3's empty think block, where its own generation prompt with
    enable_thinking=false ends)."""
    from medsft.commands.generate import _prompt_ids
    from medsft.data.prompts import choice_spans

    prepared, loaded = _trained_run(released_models, write_recipe, name, kwargs)
    dataset = prepared.datasets[0]
    row, example = dataset.parts["test"][0], dataset.task.example(dataset.parts["test"][0])
    question = example.prompt[-1]["content"]
    trained = next(r for r in prepared.train_dataset)  # the first training row, as the trainer receives it
    first = next(i for i, label in enumerate(trained["labels"]) if label != encoding.IGNORE)
    assert visible in loaded.tokenizer.decode(trained["input_ids"][:first])

    span, _ = encoding.Encoder(loaded.tokenizer, 512).span(example)
    training_prompt = span.ids[: span.start]
    assert visible in loaded.tokenizer.decode(training_prompt)
    scored = choice_spans(encoding.Encoder(loaded.tokenizer, 512), dataset.task, row)
    assert all(s.ids[: s.start] == training_prompt for s in scored)
    assert _prompt_ids("run", question, True, loaded.tokenizer) == training_prompt
    assert _served_ids(loaded, [{"role": "user", "content": question}]) == training_prompt
    if name == "qwen3":  # where the template's own generation prompt, with the keyword, ends
        assert training_prompt == loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, enable_thinking=False, return_dict=False)


def test_a_request_adds_its_own_template_keywords_and_a_misspelt_one_is_named(released_models):
    from medsft.models import inference

    loaded = inference.load(str(released_models("llama3.1")))
    messages = [{"role": "user", "content": "Febrile?"}]
    ids = _served_ids(loaded, messages, chat_template_kwargs={"date_string": "01 Jan 2027"})
    assert "Today Date: 01 Jan 2027" in loaded.tokenizer.decode(ids)
    assert "Today Date: 26 Jul 2024" in loaded.tokenizer.decode(_served_ids(loaded, messages))
    from fastapi.testclient import TestClient

    from medsft.serving import server

    reply = TestClient(server.create_app(loaded)).post("/v1/chat/completions", json={
        "messages": messages, "max_tokens": 1, "chat_template_kwargs": {"date_strng": "x"}})
    assert reply.status_code == 400 and reply.json()["error"]["message"] == (
        "chat_template_kwargs.date_strng is not read by this model's chat template; did you mean date_string?")


def test_a_misspelt_template_keyword_in_a_recipe_is_one_line(released_models, write_recipe, tmp_path, capsys):
    from medsft.__main__ import main

    recipe = write_recipe(model_name_or_path=str(released_models("qwen3")), chat=True,
                          chat_template_kwargs={"enable_thinkng": False})
    assert main([str(recipe)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "medsft: error: chat_template_kwargs.enable_thinkng is not read by this model's chat template; "
        "did you mean enable_thinking?"]
    assert not (tmp_path / "out").exists()


@needs_pubmedqa
@pytest.mark.parametrize("name", FAMILIES)
def test_plain_prompts_split_as_lm_evaluation_harness_splits_them(released_models, name):
    """lm-evaluation-harness's loglikelihood request (HFLM._encode_pair: the context's trailing spaces moved to the
    continuation, context + continuation encoded whole, split at the context's own length; no BOS by default): the
    same continuation tokens and the same context as medsft's plain choice scoring, on every tokenizer kind."""
    from medsft.data.prompts import choice_spans

    tokenizer = load_tokenizer(str(released_models(name)))
    task = tasks.get(DataSpec(task="pubmedqa", prompt_style="lm_eval"))
    encoder = encoding.Encoder(tokenizer, None)
    bos = [tokenizer.bos_token_id] if released.FAMILIES[name].text_bos else []
    for row in released.pubmedqa_rows(6):
        context = task.example(row).prompt
        for label, span in zip(task.row_labels(row), choice_spans(encoder, task, row)):
            continuation, ctx = task.continuation(label), context
            spaces = len(ctx) - len(ctx.rstrip())
            if spaces:
                continuation, ctx = ctx[-spaces:] + continuation, ctx[:-spaces]
            whole = tokenizer(ctx + continuation, add_special_tokens=False)["input_ids"]
            context_ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
            assert span.ids[span.start : span.stop] == whole[len(context_ids):], (name, label)
            assert span.ids[: span.start] == bos + context_ids, (name, label)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_remembered_tokenizer_class_loads_what_autotokenizer_loads(released_models, name, tmp_path, monkeypatch):
    from test_zoo import assert_loaded_as_autotokenizer_loads

    assert_loaded_as_autotokenizer_loads(released_models(name), tmp_path, monkeypatch)


@pytest.mark.parametrize("name", FAMILIES)
def test_generation_markers_are_read_as_trl_reads_them(name):
    """medsft's own reading of `{% generation %}` (TRL's module would load transformers' models for it) agrees with
    TRL's on every released template and on marked ones."""
    from trl.chat_template_utils import has_generation_markers

    template = released.template(released.FAMILIES[name])
    marked = template.replace("{{ message['content'] }}", "{% generation %}{{ message['content'] }}{% endgeneration %}")
    for text in (template, marked, "{%- generation -%}", {"default": "{%generation%}", "tool_use": "x"}):
        assert templates.marks_generation(text) == has_generation_markers(text)
    assert templates.marks_generation("{%- generation -%}x{% endgeneration %}")


def sft_tokens(encoder, example) -> tuple[list[int], list[int]]:
    """(the prompt's ids, the answer's trained ids) as SFT encodes the example: its trained tokens are one run."""
    [row], _ = encoder(example)
    trained = [i for i, label in enumerate(row["labels"]) if label != encoding.IGNORE]
    assert trained == list(range(trained[0], trained[-1] + 1))
    return row["input_ids"][: trained[0]], row["input_ids"][trained[0] : trained[-1] + 1]


def preference_trained(model, tokenizer, trainer, config, rows) -> None:
    from datasets import Dataset

    trainer.trainer_class()(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train()
    model.eval()


@needs_pubmedqa
@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
@pytest.mark.parametrize("name", FAMILIES)
def test_dpo_on_pairs_of_unlearned_items_compares_sfts_tokens_and_ranks_the_key_first(released_models, name, chat, tmp_path):
    """Pairs built from 12 PubMedQA items the model has not learned (the key's answer against each other option):
    each side's tokens are exactly those SFT trains for that answer (the template's end-of-turn token included, the
    prompt shared), and DPO on them makes choice scoring rank the key first on >= 90% of the items."""
    import random

    from medsft.data.pairs import tokenized_pair
    from medsft.recipe.preference_keys import MedsftDPOConfig
    from medsft.training.dpo import DPO

    path = released_models(name)
    tokenizer = load_tokenizer(str(path))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    task, items = tasks.get(DataSpec(task="pubmedqa", chat=chat)), released.pubmedqa_rows(12)
    encoder = encoding.Encoder(tokenizer, MAX_LENGTH)
    pairs = []
    for row in items:
        for chosen, rejected in task.pairs(row, True, random.Random(0)):
            pair, _ = tokenized_pair(encoder, chosen, rejected)
            (prompt, chosen_ids), (other_prompt, rejected_ids) = sft_tokens(encoder, chosen), sft_tokens(encoder, rejected)
            assert pair == {"prompt_ids": prompt, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}
            assert other_prompt == prompt
            pairs.append(pair)
    assert len(pairs) == 24

    def accuracy():
        return sum(p["prediction"] == p["gold"] for p in scoring.score_choices(model, tokenizer, task, items, MAX_LENGTH)) / 12

    assert accuracy() < 0.9  # not learned
    config = MedsftDPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=5e-3, max_steps=60,
                             beta=0.1, max_length=MAX_LENGTH, report_to=[], use_cpu=True, save_strategy="no", seed=0)
    preference_trained(model, tokenizer, DPO(), config, pairs)
    assert accuracy() >= 0.9, (name, chat)


@needs_pubmedqa
def test_kto_on_unpaired_answers_of_unlearned_items_ranks_the_key_first(released_models, tmp_path):
    """KTO on the same items unpaired (the key's answer desirable, the two others not): each completion's tokens are
    SFT's, and choice scoring then ranks the key first on >= 90% of them."""
    import random

    from medsft.data.pairs import tokenized_completion
    from medsft.recipe.preference_keys import MedsftKTOConfig
    from medsft.training.kto import KTO

    path = released_models("qwen3")
    tokenizer = load_tokenizer(str(path))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    task, items = tasks.get(DataSpec(task="pubmedqa", chat=True)), released.pubmedqa_rows(12)
    encoder = encoding.Encoder(tokenizer, MAX_LENGTH)
    rows = []
    for item in items:
        for example, desirable in task.unpaired(item, True, random.Random(0)):
            completion, _ = tokenized_completion(encoder, example, desirable)
            prompt, trained = sft_tokens(encoder, example)
            assert completion == {"prompt_ids": prompt, "completion_ids": trained, "label": desirable}
            rows.append(completion)
    assert sum(r["label"] for r in rows) == 12 and len(rows) == 36
    # twice the weight on the desirable third: KTO's recommended balance (TRL warns outside it)
    config = MedsftKTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=5e-3, max_steps=120,
                             beta=0.1, max_length=MAX_LENGTH, desirable_weight=2.0,
                             report_to=[], use_cpu=True, save_strategy="no", seed=0)
    preference_trained(model, tokenizer, KTO(), config, rows)
    predictions = scoring.score_choices(model, tokenizer, task, items, MAX_LENGTH)
    assert sum(p["prediction"] == p["gold"] for p in predictions) / 12 >= 0.9
