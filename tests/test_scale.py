"""At the scale users run: scoring memory bounded by what is scored, not by the vocabulary."""

import math

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from medsft.evaluation import logprobs, scoring
from medsft.models.tokenizer import load_tokenizer
from medsft.recipe.keys import DataSpec
from medsft import tasks

BIG_VOCABULARY = 128_256  # Llama-3's


def big_vocabulary_model(tokenizer):
    """A tiny Llama whose LM head has Llama-3's 128,256 rows (the tokenizer uses the first few hundred)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=BIG_VOCABULARY, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config).eval()


def test_scoring_never_builds_a_vocabulary_sized_tensor_per_position(tiny_model, monkeypatch):
    """Perplexity of long texts at a 128k vocabulary, eval batch 8: every LM head call projects at most ROWS hidden
    states, and the numbers equal the full distribution's (log_softmax over every position's logits)."""
    tokenizer = load_tokenizer(str(tiny_model))
    model = big_vocabulary_model(tokenizer)
    task = tasks.get(DataSpec(task="text"))
    rows = [{"id": str(i), "text": " ".join(f"finding {j} of patient {i} was stable." for j in range(25))} for i in range(9)]
    shapes = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape)))
    monkeypatch.setattr(logprobs, "ROWS", 32)
    logliks, counts = scoring.item_logliks(model, tokenizer, task, rows, 1024, batch_size=8)
    projected = [s for s in shapes if s[-1] == BIG_VOCABULARY]
    assert projected and all(len(s) == 2 and s[0] <= 32 for s in projected), set(projected)
    assert sum(counts) > 8 * 32  # many more scored positions than one chunk holds
    with torch.no_grad():
        for row, loglik in zip(rows[:2], logliks):
            ids = tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id]
            assert len(ids) <= 1024
            full = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits.float(), -1)[0, :-1]
            expected = full.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).sum().item()
            assert math.isclose(loglik, expected, rel_tol=1e-4)


def recorded_loads(monkeypatch) -> list[dict]:
    """Every from_pretrained call's keyword arguments, the call itself made as usual."""
    from transformers import PreTrainedModel

    calls, original = [], PreTrainedModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        calls.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(recording))
    return calls


def test_eval_loads_and_scores_in_the_dtype_asked_for(write_recipe, tmp_path, monkeypatch):
    from medsft.__main__ import main

    assert main([str(write_recipe(max_steps=1, eval_after_train=False, sample_count=0))]) == 0
    seen, scored = [], scoring.scored_targets

    def spying(model, *args, **kwargs):
        seen.append({p.dtype for name, p in model.named_parameters() if "lora_" not in name})
        return scored(model, *args, **kwargs)

    monkeypatch.setattr(scoring, "scored_targets", spying)
    calls = recorded_loads(monkeypatch)
    assert main(["eval", str(tmp_path / "out"), "--dtype", "bfloat16", "--max_test_samples", "6"]) == 0
    assert calls and all(c["dtype"] == "bfloat16" for c in calls)
    assert seen and all(dtypes == {torch.bfloat16} for dtypes in seen)


def test_device_map_reaches_from_pretrained_in_every_inference_command(write_recipe, tmp_path, monkeypatch, capsys):
    import uvicorn

    from medsft.__main__ import main

    assert main([str(write_recipe(max_steps=1, eval_after_train=False, sample_count=0))]) == 0
    run = str(tmp_path / "out")
    calls = recorded_loads(monkeypatch)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    commands = {
        "eval": ["eval", run, "--device_map", "auto", "--max_test_samples", "3"],
        "generate": ["generate", run, "Patient presents with", "--max_new_tokens", "2", "--device_map", "auto"],
        "serve": ["serve", run, "--device_map", "auto"],
        "merge": ["merge", run, str(tmp_path / "merged"), "--device_map", "auto"],
    }
    for name, argv in commands.items():
        calls.clear()
        assert main(argv) == 0, name
        assert calls and all(c.get("device_map") == "auto" for c in calls), (name, calls)


def test_device_map_under_several_processes_is_one_line(write_recipe, monkeypatch, capsys):
    from medsft.__main__ import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([str(write_recipe(device_map="auto"))]) == 2
    assert "device_map: auto splits one model across this machine's GPUs in one process" in capsys.readouterr().err


def test_a_full_fine_tune_never_holds_its_base_beside_the_tuned_model(write_recipe, tmp_path, monkeypatch):
    """Training scores the base on the model it starts from, before it trains; `eval RUN` loads and scores the base,
    lets it go, then loads the tuned model. Either way the base's numbers are those of the base scored alone."""
    import json
    import weakref

    from medsft.__main__ import main
    from medsft.evaluation import results

    monkeypatch.setattr(results, "base_of", lambda recipe, model: (_ for _ in ()).throw(AssertionError("a second copy")))
    recipe = write_recipe(use_peft=False, max_steps=2, max_test_samples=12, learning_rate=1e-3, sample_count=1)
    calls = recorded_loads(monkeypatch)
    assert main([str(recipe)]) == 0
    assert len(calls) == 1  # the model training loads; the base is never loaded again
    run = tmp_path / "out"
    trained = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]

    from transformers import PreTrainedModel

    alive, recording = [], PreTrainedModel.from_pretrained.__func__

    def tracking(cls, *args, **kwargs):
        assert all(ref() is None for ref in alive), "the base is still held when the tuned model loads"
        model = recording(cls, *args, **kwargs)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(tracking))
    calls.clear()
    assert main(["eval", str(run), "--output_dir", str(run)]) == 0
    assert len(calls) == 2  # the base, then (once it is gone) the tuned model
    again = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for a, b in zip(trained, again):
        assert a["id"] == b["id"] and a["base_prediction"] == b["base_prediction"]
        assert all(math.isclose(a["base_loglik"][k], b["base_loglik"][k], rel_tol=1e-5, abs_tol=1e-5) for k in a["base_loglik"])


def test_prepared_data_is_read_back_and_prepared_again_when_what_shapes_it_changes(write_recipe, tmp_path, monkeypatch,
                                                                                  tiny_chat_model):
    from medsft.data import datasets, encoding
    from medsft.recipe.parser import parse_recipe
    from medsft.training.prepare import prepare

    monkeypatch.setenv("MEDSFT_DATA_CACHE", str(tmp_path / "cache"))
    tokenized, read = [], []
    encode, rows = encoding.encode, datasets.rows
    monkeypatch.setattr(encoding, "encode", lambda *a, **k: tokenized.append(1) or encode(*a, **k))
    monkeypatch.setattr(datasets, "rows", lambda *a, **k: read.append(1) or rows(*a, **k))
    notes = tmp_path / "qa.jsonl"
    notes.write_text("".join(f'{{"prompt": "Question {i}: abnormal?\\nAnswer:", "completion": " yes"}}\n' for i in range(40)))
    recipe = write_recipe(task="prompt_completion", dataset_name=str(notes))

    def prepared(*extra):
        tokenized.clear(), read.clear()
        return prepare(parse_recipe([str(recipe), *extra]))

    first = prepared()
    assert tokenized and read
    again = prepared()
    assert not tokenized and not read  # nothing read or tokenized again
    assert again.train_dataset.cache_files and str(tmp_path / "cache") in again.train_dataset.cache_files[0]["filename"]
    assert again.train_dataset.to_dict() == first.train_dataset.to_dict() and again.stats == first.stats
    for changed in (["--max_length", "128"], ["--model_name_or_path", str(tiny_chat_model)], ["--eos_token", "Ġyes"],
                    ["--completion_only_loss", "false"]):
        prepared(*changed)
        assert tokenized and not read, changed  # the same rows, tokenized anew
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}")
    prepared("--model_name_or_path", str(tiny_chat_model), "--chat_template_path", str(template))
    assert tokenized and not read
    notes.write_text(notes.read_text().replace("Question 3:", "Question three:"))
    prepared()
    assert tokenized and read  # the file's content changed: its rows are read again


def test_streaming_is_refused_with_why(write_recipe, capsys):
    from medsft.__main__ import main

    assert main([str(write_recipe(streaming=True))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medsft: error: streaming: true is not offered:")
