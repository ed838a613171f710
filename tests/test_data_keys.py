"""Every TRL data key medsft accepts takes effect or is refused; bad data gets one line and exit 2."""

import pytest
import torch

from medsft.data import encoding
from medsft.__main__ import main
from medsft.recipe.parser import parse_recipe
from medsft.errors import UserError
from medsft.training import fit, prepare

from conftest import write_jsonl

CHATS = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Dose {i}?"},
                       {"role": "assistant", "content": f"{i} mg."}]} for i in range(12)]
PAIRS = [{"prompt": f"Temperature {37 + i % 3} C. Fever?", "completion": " yes" if i % 3 == 2 else " no"} for i in range(12)]


def prepared(write_recipe, **keys):
    return prepare.prepare(parse_recipe([str(write_recipe(**keys))]))


def labels_of(prep):
    return prep.train_dataset["input_ids"], prep.train_dataset["labels"]


def test_completion_only_loss_false_trains_the_prompt_too(write_recipe, tmp_path):
    data = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    masked = prepared(write_recipe, task="prompt_completion", dataset_name=data)
    whole = prepared(write_recipe, task="prompt_completion", dataset_name=data, completion_only_loss=False)
    assert any(-100 in row for row in labels_of(masked)[1])
    ids, labels = labels_of(whole)
    assert ids == labels_of(masked)[0] and labels == ids


def test_assistant_only_loss_false_trains_the_whole_conversation(write_recipe, tmp_path, tiny_chat_model):
    data = str(write_jsonl(tmp_path / "chats.jsonl", CHATS))
    keys = dict(task="messages", dataset_name=data, model_name_or_path=str(tiny_chat_model))
    assistant = prepared(write_recipe, **keys)
    whole = prepared(write_recipe, **keys, assistant_only_loss=False)
    tok = assistant.tokenizer
    ids, labels = labels_of(assistant)
    assert all(tok.decode([t for t in row if t != -100]) == f"{r.split('Dose ')[1].split('?')[0]} mg.{tok.eos_token}"
               for row, r in zip(labels, (tok.decode(x) for x in ids)))
    ids, labels = labels_of(whole)
    assert labels == ids


def test_eos_token_is_the_trained_end(write_recipe, tmp_path, tiny_model):
    from medsft.models.tokenizer import load_tokenizer

    end = load_tokenizer(str(tiny_model)).convert_ids_to_tokens(7)
    prep = prepared(write_recipe, task="prompt_completion", dataset_name=str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), eos_token=end)
    assert prep.tokenizer.eos_token == end
    assert all(row[-1] == prep.tokenizer.convert_tokens_to_ids(end) for row in labels_of(prep)[1])
    with pytest.raises(UserError, match="eos_token 'no-such-token' is not in the tokenizer's vocabulary"):
        prepared(write_recipe, eos_token="no-such-token")


def test_chat_template_path_renders_the_conversations(write_recipe, tmp_path, tiny_model):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}"
                        "{% if add_generation_prompt %}### assistant: {% endif %}")
    prep = prepared(write_recipe, task="messages", dataset_name=str(write_jsonl(tmp_path / "c.jsonl", CHATS)),
                    chat_template_path=str(template))
    tok = prep.tokenizer
    assert tok.decode(prep.train_dataset[0]["input_ids"]).startswith("### system: Be brief.")
    assert tok.decode([t for t in prep.train_dataset[0]["labels"] if t != -100]).endswith(f" mg.{tok.eos_token}")
    with pytest.raises(UserError, match="chat_template_path not found"):
        prepared(write_recipe, chat_template_path=str(tmp_path / "missing.jinja"))


def test_conversations_need_a_chat_template(write_recipe, tmp_path):
    with pytest.raises(UserError, match="need a chat template and this tokenizer has none; set chat_template_path"):
        prepared(write_recipe, task="messages", dataset_name=str(write_jsonl(tmp_path / "c.jsonl", CHATS)))


def test_conversational_prompt_completion_trains_the_assistant_reply(write_recipe, tmp_path, tiny_chat_model):
    rows = [{"prompt": [{"role": "user", "content": f"Dose {i}?"}], "completion": [{"role": "assistant", "content": f"{i} mg."}]}
            for i in range(12)]
    prep = prepared(write_recipe, task="prompt_completion", dataset_name=str(write_jsonl(tmp_path / "c.jsonl", rows)),
                    model_name_or_path=str(tiny_chat_model))
    tok = prep.tokenizer
    for ids, labels in zip(*labels_of(prep)):
        text = tok.decode(ids)
        assert text.startswith("<|im_start|>user\nDose ")
        assert tok.decode([t for t in labels if t != -100]) == text.split("assistant\n")[1].removesuffix("\n")


def test_dataset_num_proc_tokenizes_in_processes_with_the_same_result(write_recipe, tmp_path):
    data = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 4))
    one = prepared(write_recipe, task="prompt_completion", dataset_name=data)
    two = prepared(write_recipe, task="prompt_completion", dataset_name=data, dataset_num_proc=2)
    assert one.train_dataset.to_list() == two.train_dataset.to_list()


def test_a_scalar_for_a_list_key_is_a_list_of_one(write_recipe):
    assert parse_recipe([str(write_recipe(sample_prompts="Patient presents with"))]).script.sample_prompts == ["Patient presents with"]


def test_packed_rows_never_attend_across_documents(tiny_model):
    from transformers import AutoModelForCausalLM

    from medsft.training.sft_trainer import packed_rows

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    a, b, c = list(range(5, 25)), list(range(30, 42)), list(range(50, 60))
    batch = packed_rows(0, None)([{"input_ids": a + b, "labels": a + b, "seq_lengths": [20, 12]},
                                  {"input_ids": c, "labels": c, "seq_lengths": [10]}])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 32)
    assert batch["position_ids"][0].tolist() == list(range(20)) + list(range(12))
    assert batch["labels"][1, 10:].eq(-100).all()
    with torch.no_grad():
        # use_cache=False as in training (TRL sets it): with a cache, transformers does not look for packed rows
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([b])).logits
    torch.testing.assert_close(packed[0, 20:], alone[0], atol=1e-4, rtol=1e-4)


def test_packed_rows_train_no_document_from_the_one_before(tiny_model, write_recipe, tmp_path):
    """A model that memorized 16 short notes: its first-step loss over them is the same packed (several notes a row)
    and unpacked (one a row). Before, each packed note's first token was a label of the note before it (0.52 against
    0.04 on these notes)."""
    import json

    from transformers import AutoModelForCausalLM

    from medsft.models.tokenizer import load_tokenizer

    notes = [{"text": f"Note {i}: patient {i} seen for {'fever' if i % 2 else 'cough'}, plan review in {i + 2} days."} for i in range(16)]
    tokenizer = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rows = [tokenizer(n["text"])["input_ids"] + [tokenizer.eos_token_id] for n in notes]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(attention == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(400):
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.11:  # what is left is each note's number after "Note": nothing before it tells it
            break
    memorized = tmp_path / "memorized"
    model.save_pretrained(memorized)
    tokenizer.save_pretrained(memorized)
    data = write_jsonl(tmp_path / "notes.jsonl", notes)
    first = {}
    for packing in (False, True):
        out = tmp_path / f"out-{packing}"
        recipe = write_recipe(f"r{packing}.yaml", model_name_or_path=str(memorized), task="text", dataset_name=str(data),
                              eval_split_size=0, test_split_size=0, use_peft=False, packing=packing, max_length=128,
                              per_device_train_batch_size=16, max_steps=1, eval_after_train=False, sample_count=0,
                              bf16=False, output_dir=str(out))
        assert main([str(recipe)]) == 0
        first[packing] = json.loads((out / "trainer_state.json").read_text())["log_history"][0]["loss"]
    assert first[False] < 0.15 and abs(first[True] - first[False]) < 1e-3, first


def test_packing_trains_through_packed_rows(write_recipe, tmp_path):
    notes = [{"text": " ".join(f"note{i} word{j}" for j in range(3 * i + 2))} for i in range(30)]
    recipe = parse_recipe([str(write_recipe(task="text", dataset_name=str(write_jsonl(tmp_path / "n.jsonl", notes)),
                                            packing=True, max_length=64))])
    prep = prepare.prepare(recipe)
    trainer = fit.build_trainer(recipe, prep)
    batches = list(trainer.get_train_dataloader())
    assert all("attention_mask" not in b for b in batches)
    assert batches[0]["input_ids"].shape[0] == recipe.training.per_device_train_batch_size
    assert any((b["position_ids"][:, 1:] == 0).any() for b in batches)  # documents start inside rows
    trainer.train()
    assert trainer.state.global_step == recipe.training.max_steps


def one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("rows, keys, expected", [
    ([{"q": "x?", "a": "y"}], {"task": "template", "prompt_template": "{questoin}", "completion_template": " {a}"},
     "row 1 has no field 'questoin', which the template task needs"),
    ([{"question": "Which?", "options": {"A": "x", "E": "y"}, "answer_idx": "A"}], {"task": "multiple_choice", "choice_labels": ["A", "B", "C", "D"]},
     "row 1: option key 'E' is not among the choices A, B, C, D (choice_labels)"),
    ([{"question": "Which?", "options": {"A": "x", "B": "y"}, "answer_idx": "F"}], {"task": "multiple_choice"},
     "row 1: answer 'F' is not one of the options (A, B, or a 0-based index, or an option's text)"),
    ([{"question": "Which?", "options": ["x", "y"], "answer_idx": 2}], {"task": "multiple_choice"},
     "row 1: answer 2 is not one of the options (A, B, or a 0-based index, or an option's text)"),
    ([{"messages": [{"role": "bot", "content": "hi"}]}], {"task": "messages"},
     "row 1: messages message 1 has unknown role 'bot'; roles are system, user, assistant, tool"),
    ([{"prompt": "p", "completion": "c"}], {"task": "prompt_completion", "columns": ["prompt", "answer"]},
     "row 1 has no column 'answer' (columns); it has prompt, completion"),
    ([{"text": "t"}], {"task": "prompt_completion"}, "row 1 has no field 'prompt', which the prompt_completion task needs"),
])
def test_bad_rows_are_one_line_naming_the_row(capsys, write_recipe, tmp_path, rows, keys, expected):
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    line = one_line(capsys, [str(write_recipe(dataset_name=str(data), **keys))])
    assert line == f"medsft: error: dataset {data} {expected}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keys, expected", [
    ({"dataset_name": None, "dataset_mixture": [{"id": "synthetic", "weight": -1}]}, "weight in dataset_mixture entry 1 must be 0 or more (0: evaluation only), got -1.0"),
    ({"dataset_name": None, "dataset_mixture": [{"id": "synthetic", "wieght": 1}]}, "unknown key 'wieght' in dataset_mixture entry 1; did you mean 'weight'?"),
    ({"dataset_name": None, "dataset_mixture": [{"id": "synthetic", "weight": 0}]}, "every dataset_mixture weight is 0: nothing would train"),
    ({"dataset_kwargs": {"skip_prepare_dataset": True}}, "dataset_kwargs: medsft prepares the dataset itself"),
    ({"truncation_mode": "keep_end"}, "truncation_mode: medsft never cuts the answer"),
    ({"packing": True, "packing_strategy": "wrapped"}, "packing_strategy: wrapped lets a packed row attend across documents"),
    ({"prompt_template": "Q: {q}"}, "prompt_template does nothing for task pubmedqa; remove it"),
    ({"task": "template"}, "task template needs prompt_template and completion_template"),
    ({"test_split_size": 0.7, "eval_split_size": 0.4}, "eval_split_size and test_split_size leave no training rows of 80"),
    ({"fold": 12, "split_file": "SPLITS"}, "fold 12 is out of range"),
])
def test_impossible_settings_are_one_line(capsys, write_recipe, tmp_path, keys, expected):
    splits = tmp_path / "s.json"
    splits.write_text('{"test": [], "folds": [[], []]}')
    keys = {k: (str(splits) if v == "SPLITS" else v) for k, v in keys.items()}
    line = one_line(capsys, [str(write_recipe(**keys))])
    assert line.startswith(f"medsft: error: {expected}"), line


def test_every_recipe_key_of_medsft_is_read_by_some_code():
    """No key accepted and ignored: each of medsft's own fields is read somewhere in the package."""
    import dataclasses
    import re

    from conftest import ROOT
    from medsft.recipe.keys import MedsftArguments

    from medsft.errors import UserError

    code = "\n".join(p.read_text() for p in (ROOT / "medsft").rglob("*.py") if p.name != "keys.py")
    fields = dataclasses.fields(MedsftArguments)
    refused = [f for f in fields if f.metadata["help"].startswith("Refused")]
    unread = [f.name for f in fields if f not in refused and not re.search(rf"\b{f.name}\b", code)]
    assert unread == []
    for f in refused:  # a key offered only to be refused says why when set
        with pytest.raises(UserError, match=f"^{f.name}: "):
            MedsftArguments(**{f.name: not f.default})


def test_encode_drops_a_conversation_that_cannot_fit(tiny_chat_model):
    from medsft.models.tokenizer import load_tokenizer
    from medsft.tasks import Example

    tok = load_tokenizer(str(tiny_chat_model))
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    assert encoding.Encoder(tok, 64)(Example(messages=long)) == ([], "dropped")
    turns = [{"role": "user", "content": "old question " * 20}, {"role": "assistant", "content": "old answer"},
             {"role": "user", "content": "new?"}, {"role": "assistant", "content": "new answer"}]
    [row], status = encoding.Encoder(tok, 40)(Example(messages=turns))
    assert status == "truncated" and "old" not in tok.decode(row["input_ids"]) and "new answer" in tok.decode(row["input_ids"])


def test_a_conversation_without_an_assistant_turn_is_counted_as_such(tiny_chat_model):
    from medsft.data import encoding
    from medsft.models.tokenizer import load_tokenizer
    from medsft.tasks import Example

    rows = [Example(messages=[{"role": "user", "content": "Is it?"}]),
            Example(messages=[{"role": "user", "content": "Is it?"}, {"role": "assistant", "content": "Yes."}])]
    _, stats = encoding.encode(rows, encoding.Encoder(load_tokenizer(str(tiny_chat_model)), 256))
    assert (stats.untrained, stats.dropped, stats.kept) == (1, 0, 1)


def test_a_chat_template_that_is_not_jinja_is_one_line(write_recipe, tmp_path, capsys):
    from medsft.__main__ import main

    template = tmp_path / "broken.jinja"
    template.write_text("{% for m in messages %}\n{{ m['content'] }}\n")
    assert main([str(write_recipe(chat_template_path=str(template)))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"medsft: error: chat_template_path {template} is not a valid Jinja template (line ")
