"""Every command on every family of the zoo (tests/zoo.py), run as a user runs them: one training over a mixture of
every format (prompt-completion, messages, a template with chat: true, multiple choice, PubMedQA as a chat), then
eval, generate (plain and --chat), merge, preview and the server (batched, streaming and not)."""

import json
import shutil
import threading

import pytest

import zoo
from conftest import run_cli, write_jsonl

pytestmark = pytest.mark.slow


def mixture(tmp_path, chat: bool) -> list[dict]:
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Temperature {36 + i % 4} C. Febrile?\nAnswer:",
                                              "completion": " yes" if i % 4 > 1 else " no"} for i in range(24)])
    mcq = write_jsonl(tmp_path / "mcq.jsonl", [{"question": f"Which drug for case {i}?", "answer_idx": "ABCD"[i % 4],
                                                "options": {"A": "aspirin", "B": "heparin", "C": "insulin", "D": "morphine"}}
                                               for i in range(24)])
    entries = [{"path": str(pc), "task": "prompt_completion"}, {"path": str(mcq), "task": "multiple_choice"},
               {"name": "pubmedqa", "dataset_name": "synthetic", "task": "pubmedqa", "synthetic_size": 40, "chat": chat}]
    if chat:
        chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [
            {"role": "user", "content": f"Heart rate {60 + 10 * i}. Tachycardic?"},
            {"role": "assistant", "content": "Yes." if i % 3 == 0 else "No."},
            {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "Yes, sure."}]} for i in range(24)])
        qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"HbA1c {6 + i % 4}%. Controlled?", "answer": "yes" if i % 2 else "no"}
                                                 for i in range(24)])
        entries += [{"path": str(chats), "task": "messages"},
                    {"path": str(qa), "task": "template", "prompt_template": "{question}", "completion_template": "{answer}",
                     "chat": True}]
    return [{**e, "test_split_size": 4, "eval_split_size": 2} for e in entries]


def post(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_every_command_on_every_family(zoo_models, write_recipe, tmp_path, name):
    family = zoo.FAMILIES[name]
    base = zoo_models(name)
    chat = family.template is not None
    recipe = write_recipe(model_name_or_path=str(base), dataset_name=None, dataset_mixture=mixture(tmp_path, chat),
                          max_steps=3, sample_count=1, sample_max_new_tokens=4, max_length=192)
    out = tmp_path / "out"
    proc = run_cli(recipe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluations = json.loads((out / "eval_results.json").read_text())["evaluations"]
    kinds = {e["name"]: ("accuracy" if "labels" in e else "perplexity") for e in evaluations}
    assert kinds == {"pc": "perplexity", "mcq": "accuracy", "pubmedqa": "accuracy",
                     **({"chats": "perplexity", "qa": "perplexity"} if chat else {})}
    assert all(set(e["models"]) == {"base", "tuned"} and e["n"] == 4 for e in evaluations)

    proc = run_cli("eval", out, "--sample_count", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("preview", recipe, "-n", "2")
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr[-3000:]
    proc = run_cli("generate", out, "Temperature 39 C. Febrile?\nAnswer:", "--max_new_tokens", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("generate", out, "Is the patient febrile?", "--chat", "--max_new_tokens", "4")
    if chat:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert (proc.returncode, proc.stderr.strip().splitlines()[-1]) == (2, f"medsft: error: --chat needs a chat template and {out} has none")
    merged = tmp_path / "merged"
    proc = run_cli("merge", out, merged)
    assert proc.returncode == 0 and (merged / "model.safetensors").is_file(), proc.stderr[-3000:]

    from fastapi.testclient import TestClient

    from medsft.models import inference
    from medsft.serving import server
    from medsft.serving.pipeline import ServeOptions

    client = TestClient(server.create_app(inference.load(str(out)), ServeOptions(max_batch=4)))
    done = post(client, "/v1/completions", {"prompt": "Temperature 39 C. Febrile?\nAnswer:", "max_tokens": 4}).json()
    assert done["choices"][0]["finish_reason"] in ("stop", "length") and done["usage"]["completion_tokens"] <= 4
    if chat:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(post(client, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Febrile?"}], "max_tokens": 5, "temperature": 0}).json())) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({a["choices"][0]["message"]["content"] for a in answers}) == 1  # batched, greedy: the same reply
        stream = post(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Febrile?"}], "max_tokens": 5,
                                                       "stream": True}).text
        events = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length") and stream.rstrip().endswith("data: [DONE]")
        if family.system == "raises":
            response = client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "Be brief."},
                                                                              {"role": "user", "content": "Febrile?"}]})
            assert response.status_code == 400 and "System role not supported" in response.json()["error"]["message"]


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_the_generate_command_stops_at_the_end_of_turn(zoo_models, tmp_path, name):
    """The family's end-of-turn token made the model's first reply token: `generate` prints nothing."""
    from medsft.data import templates
    from medsft.models.tokenizer import load_tokenizer
    from transformers import AutoModelForCausalLM

    family = zoo.FAMILIES[name]
    steered = tmp_path / "steered"
    shutil.copytree(zoo_models(name), steered)
    tokenizer = load_tokenizer(str(steered))
    model = AutoModelForCausalLM.from_pretrained(steered)
    chat = family.template is not None
    ids = templates.chat_ids(tokenizer, [{"role": "user", "content": "Febrile?"}], True) if chat else tokenizer("Febrile?")["input_ids"]
    zoo.steer(model, ids, tokenizer.convert_tokens_to_ids(family.end_of_turn or family.eos))
    model.save_pretrained(steered)
    proc = run_cli("generate", steered, "Febrile?", *(["--chat"] if chat else []), "--max_new_tokens", "16")
    assert proc.returncode == 0 and proc.stdout.strip() == "", (proc.stdout, proc.stderr[-2000:])


@pytest.mark.parametrize("recipe, name", [("qwen2.5_pubmedqa_lora.yaml", "qwen2"), ("llama3.2_pubmedqa_lora.yaml", "llama3")])
def test_the_instruct_recipes_train_their_family_through_its_template(zoo_models, tmp_path, recipe, name):
    """The hub recipes for Qwen and Llama-3 instruct models, pointed at the zoo's model of the same family: every
    training row's answer ends in the family's end-of-turn token, and the recipe runs end to end."""
    from conftest import ROOT
    from medsft.recipe.parser import parse_recipe
    from medsft.training import prepare

    family = zoo.FAMILIES[name]
    args = [str(ROOT / "recipes" / recipe), "--model_name_or_path", str(zoo_models(name)), "--dataset_name", "synthetic",
            "--synthetic_size", "60", "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
            "--output_dir", str(tmp_path / "out"), "--sample_count", "1", "--sample_max_new_tokens", "4", "--max_test_samples", "8"]
    prepared = prepare.prepare(parse_recipe(args))
    eot = prepared.tokenizer.convert_tokens_to_ids(family.end_of_turn)
    for labels in prepared.train_dataset["labels"]:
        trained = [t for t in labels if t != -100]
        assert trained[-1] == eot and trained.count(eot) == 1
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [evaluation] = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"]
    assert evaluation["n"] == 8 and evaluation["models"]["tuned"]["calibration"]["dev_items"] > 0
