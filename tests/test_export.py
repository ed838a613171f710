"""`medsft export RUN OUT.gguf`: a LoRA run and a full run of each family the GGUF reader supports, written as GGUF,
read back through transformers' loader: the next tokens' log-probabilities on the run's texts within 1e-2 and the
most likely token the same at >= 99% of positions (>= 95% at bf16 and q8_0); the file's chat template verbatim and its end
of generation the run's end-of-turn token; bad input one line, exit 2."""

import json
import os

import pytest

import released
from medsft.__main__ import main

pytestmark = pytest.mark.slow
KEYS = {"max_steps": 2, "max_test_samples": 8, "sample_count": 0, "max_length": 192}


def field(reader, key):
    """A GGUF metadata value: a string, or an integer."""
    found = reader.fields[key]
    value = found.parts[found.data[0]]
    return bytes(value).decode() if found.types[0].name == "STRING" else int(value[0])


def trained(write_recipe, base, lora: bool, tmp_path, name, **keys):
    recipe = write_recipe(f"{name}.yaml", model_name_or_path=str(base), use_peft=lora, output_dir=str(tmp_path / name),
                          learning_rate=1e-3, **KEYS, **keys)
    assert main([str(recipe)]) == 0
    return tmp_path / name


@pytest.mark.parametrize("name", ["llama3", "qwen2", "gemma2", "mistral", "phi3", "gpt2"])
def test_a_lora_run_and_a_full_run_export_and_read_back_as_the_run(zoo_models, write_recipe, tmp_path, name, capsys):
    """(The zoo's Qwen2 and Gemma-2 tie their output layer to the embeddings, Llama-3's does not: both layouts. GPT-2:
    its Conv1D weights transposed to llama.cpp's layout, learned positions, no chat template.)"""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from medsft.data.templates import end_of_turn

    base = released.sharpened(zoo_models(name), tmp_path / "base")  # a query's rows in the wrong order would show
    for lora in (True, False):
        run = trained(write_recipe, base, lora, tmp_path, f"{name}-{'lora' if lora else 'full'}")
        for kind in (("f16", "bf16", "q8_0") if lora else ("f16",)):
            out = tmp_path / f"{run.name}-{kind}.gguf"
            assert main(["export", str(run), str(out), "--type", kind, "--check", "8"]) == 0
            check = json.loads(out.with_suffix(".check.json").read_text())
            tokens = check["next_tokens"]
            assert tokens["positions"] > 100
            if kind == "f16":
                assert tokens["max_logprob_difference"] <= 1e-2 and tokens["top1_agreement"] >= 0.99, (run.name, tokens)
            else:  # bf16 keeps 8 bits of each weight's mantissa, q8_0 8 bits a block: near-ties move
                assert tokens["top1_agreement"] >= 0.95, (run.name, kind, tokens)
            items = check["items"]["pubmedqa"]
            assert items["n"] == 8
            # the verdict is the check's: every item answered alike (a random tiny model's near-ties may flip at q8_0)
            verdict = "gives" if items["same_answer"] == 1.0 else "does NOT give"
            assert f"the exported model {verdict} the run's answers" in capsys.readouterr().out
            assert kind != "f16" or verdict == "gives"
        tokenizer = AutoTokenizer.from_pretrained(run)
        reader = GGUFReader(tmp_path / f"{run.name}-f16.gguf")
        if tokenizer.chat_template:  # verbatim (the zoo's GPT-2 has none, nor does its file)
            assert field(reader, "tokenizer.chat_template") == tokenizer.chat_template
        else:
            assert "tokenizer.chat_template" not in reader.fields
        assert field(reader, "tokenizer.ggml.eot_token_id") == end_of_turn(tokenizer) is not None
        assert field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
        assert json.loads(field(reader, "medsft.chain")) == []
        assert field(reader, "medsft.run") == str(run.resolve())


@pytest.mark.skipif(not released.available(), reason=f"released chat templates absent: {released.TEMPLATES}")
def test_qwen3_with_its_released_template_exports_and_reads_back(write_recipe, tmp_path, capsys):
    """The zoo has no Qwen3: the tiny Qwen3 carrying Qwen3's released template (its think block) instead, trained
    through it with `enable_thinking: false`: the keywords go in the file, the command prints llama-server's flag for
    them, and the Modelfile's Go template ends its generation prompt with the empty think block they render."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    base = released.sharpened(released.build(released.FAMILIES["qwen3"], tmp_path / "qwen3", hidden=32))
    for lora in (True, False):
        run = trained(write_recipe, base, lora, tmp_path, f"qwen3-{'lora' if lora else 'full'}", chat=True,
                      chat_template_kwargs={"enable_thinking": False})
        out = tmp_path / f"{run.name}.gguf"
        capsys.readouterr()
        assert main(["export", str(run), str(out), "--check", "8", "--modelfile", "--force"]) == 0
        assert ("llama.cpp: the run renders its chat template with keywords; serve it with llama-server --jinja "
                """--chat-template-kwargs '{"enable_thinking": false}'""") in capsys.readouterr().out
        template = (tmp_path / "Modelfile").read_text().split('TEMPLATE """')[1].split('"""')[0]
        assert template.endswith('{{ if and $last (ne .Role "assistant") }}<think>\n\n</think>\n\n{{ end }}{{ end }}')
        tokens = json.loads(out.with_suffix(".check.json").read_text())["next_tokens"]
        assert tokens["max_logprob_difference"] <= 1e-2 and tokens["top1_agreement"] >= 0.99, (run.name, tokens)
        reader = GGUFReader(out)
        assert field(reader, "general.architecture") == "qwen3"
        assert json.loads(field(reader, "medsft.chat_template_kwargs")) == {"enable_thinking": False}
        assert field(reader, "tokenizer.chat_template") == AutoTokenizer.from_pretrained(run).chat_template
        assert field(reader, "tokenizer.ggml.eot_token_id") == AutoTokenizer.from_pretrained(run).convert_tokens_to_ids("<|im_end|>")


def test_the_modelfile_stops_at_the_end_of_turn(zoo_models, write_recipe, tmp_path):
    run = trained(write_recipe, zoo_models("llama3"), True, tmp_path, "llama3")
    assert main(["export", str(run), str(tmp_path / "m.gguf"), "--check", "0", "--modelfile"]) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.gguf").stat().st_mode & 0o777 == 0o666 & ~mask  # readable as any file the user writes
    lines = (tmp_path / "Modelfile").read_text().splitlines()
    assert lines[0] == "FROM ./m.gguf"
    template = (tmp_path / "Modelfile").read_text().split('TEMPLATE """')[1].split('"""')[0]
    assert "{{ .Content }}" in template and "<|start_header_id|>" in template  # the zoo's Llama-3 template, in Go
    assert 'PARAMETER stop "<|eot_id|>"' in lines and 'PARAMETER stop "<|end_of_text|>"' in lines


def test_bad_input_is_one_line(zoo_models, write_recipe, tmp_path, capsys):
    def one_line(*argv):
        capsys.readouterr()  # what training printed before (its progress bars, where an earlier test left them on)
        assert main(["export", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    import shutil

    from transformers import OPTConfig, OPTForCausalLM

    opt = tmp_path / "opt"  # an architecture llama.cpp's GGUF export does not have here: OPT, with GPT-2's tokenizer
    shutil.copytree(zoo_models("gpt2"), opt)
    for old in opt.glob("model*.safetensors"):
        old.unlink()
    vocab = json.loads((opt / "config.json").read_text())["vocab_size"]
    OPTForCausalLM(OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=4,
                             word_embed_proj_dim=32, max_position_embeddings=512)).save_pretrained(opt)
    gpt2 = trained(write_recipe, opt, True, tmp_path, "opt-run")
    assert one_line(gpt2, tmp_path / "g.gguf") == (
        "medsft: error: OPTForCausalLM cannot be written as GGUF by medsft; it writes GPT2LMHeadModel, Gemma2ForCausalLM, "
        "LlamaForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM")
    assert not (tmp_path / "g.gguf").exists() and not list(tmp_path.glob(".g.gguf.*"))
    assert one_line(tmp_path / "nowhere", tmp_path / "x.gguf") == (
        f"medsft: error: {tmp_path / 'nowhere'} holds no medsft run (recipe.yaml); give a run folder or one of its checkpoints")
    (tmp_path / "taken.gguf").write_bytes(b"mine")
    assert one_line(gpt2, tmp_path / "taken.gguf") == f"medsft: error: {tmp_path / 'taken.gguf'} exists; pass --force to replace it"
    assert (tmp_path / "taken.gguf").read_bytes() == b"mine"
    yarn = tmp_path / "qwen2-yarn"  # a rotary scaling that also scales attention: refused before anything is left
    shutil.copytree(zoo_models("qwen2"), yarn)
    config = json.loads((yarn / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    (yarn / "config.json").write_text(json.dumps(config))
    assert one_line(trained(write_recipe, yarn, True, tmp_path, "yarn"), tmp_path / "y.gguf") == (
        "medsft: error: rope scaling yarn of qwen2 is not written by medsft's GGUF export (it writes llama3, linear "
        "for Llama, longrope for Phi-3); export a model with plain rotary positions")
    assert not (tmp_path / "y.gguf").exists() and not list(tmp_path.glob(".y.gguf.*"))
    assert one_line(gpt2, tmp_path / "x.gguf", "--type", "q4_k") == (
        "medsft: error: --type q4_k is not a type medsft writes; choose f16, bf16, q8_0")


@pytest.mark.skipif(not released.available(), reason=f"released chat templates absent: {released.TEMPLATES}")
@pytest.mark.parametrize("name", ["mistral", "phi3", "gemma2", "llama3.1"])
def test_released_tokenizers_export_and_read_back_with_the_same_tokens(write_recipe, tmp_path, name, capsys):
    """The released families' own kinds of tokenizer: SentencePiece BPE with byte fallback (Mistral and Phi-3 put a
    space before the text, Gemma does not) written as llama.cpp's `llama` tokenizer with scores, for a run on plain
    prompts and one through the chat template; and Llama 3.1's byte-level BPE with Llama 3's rotary scaling
    (rope_freqs). The file's tokenizer gives the run's tokens on every text; the model reads back as the run."""
    from gguf import GGUFReader

    family = released.FAMILIES[name]
    if name == "llama3.1":
        # a small base and original context, so that the scaling moves every frequency
        family = released.with_config(family, {"rope_scaling": {
            "rope_type": "llama3", "rope_theta": 10.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16}})
    if name == "phi3":
        family = released.with_config(family, released.LONGROPE)
    base = released.sharpened(released.build(family, tmp_path / name, hidden=32))
    for chat in (False, True):
        run = trained(write_recipe, base, True, tmp_path, f"{name}-{'chat' if chat else 'plain'}", chat=chat)
        out = tmp_path / f"{run.name}.gguf"
        capsys.readouterr()
        assert main(["export", str(run), str(out), "--check", "8"]) == 0
        told = ("llama.cpp: Phi-3's long-context factors are used whenever the context (-c) exceeds 256 tokens; the run "
                "scored with the short ones (the run's texts were no longer): run llama.cpp with -c 256 or less to match it")
        assert (told in capsys.readouterr().out) == (name == "phi3")
        check = json.loads(out.with_suffix(".check.json").read_text())
        assert check["tokens"] == {"texts": 8, "same": 1.0}, check["tokens"]
        tokens = check["next_tokens"]
        assert tokens["max_logprob_difference"] <= 1e-2 and tokens["top1_agreement"] >= 0.99, (run.name, tokens)
        reader = GGUFReader(out)
        if family.kind != "byte":
            assert field(reader, "tokenizer.ggml.model") == "llama"
            assert "tokenizer.ggml.merges" not in reader.fields and "tokenizer.ggml.scores" in reader.fields
            # llama.cpp puts its space after every special token: only where the run's texts start with words
            assert bool(field(reader, "tokenizer.ggml.add_space_prefix")) == (family.kind == "llama2" and not chat)
    if name in ("llama3.1", "phi3"):  # the frequencies llama.cpp computes from the file are the run's
        import torch
        from transformers import AutoModelForCausalLM

        from medsft.evaluation.export_check import read_back

        exported_model, base_model = read_back(out)[0], AutoModelForCausalLM.from_pretrained(base)
        exported, scaled = exported_model.get_decoder().rotary_emb, base_model.get_decoder().rotary_emb
        base_theta = 10.0 if name == "llama3.1" else 10000.0
        plain = torch.tensor([base_theta ** (-i / 8) for i in range(0, 8, 2)])  # head size 8
        assert (scaled.inv_freq[1:] < plain[1:] * 0.9).all()  # the scaling moved the frequencies
        torch.testing.assert_close(exported.inv_freq, scaled.inv_freq)
        if name == "phi3":
            assert field(reader, "phi3.rope.scaling.original_context_length") == 256
            assert {t.name for t in reader.tensors} >= {"rope_factors_long.weight", "rope_factors_short.weight"}
            assert exported.attention_scaling == pytest.approx(scaled.attention_scaling) and scaled.attention_scaling > 1
            long = [m.config.rope_parameters["long_factor"] for m in (exported_model, base_model)]
            assert long[0] == long[1] == [2.0, 4.0, 8.0, 16.0]


@pytest.mark.skipif(not released.available(), reason=f"released chat templates absent: {released.TEMPLATES}")
def test_the_modelfile_carries_each_released_template_in_ollamas_form():
    """Ollama runs Go templates, not Jinja: each released template is cut into its pieces and written over `.System`
    and `.Messages`; the pieces render a conversation the derivation never saw (a system message where the template
    takes one in a turn of its own, four exchanges, text over several lines) exactly as the Jinja template does, BOS
    left to llama.cpp. (Mistral's puts a system message inside the last user turn, Gemma's refuses one: not written.)"""
    from medsft.data.templates import chat_text
    from medsft.models import gguf_vocab, ollama

    turns = ["Note: 71-year-old, dyspnoea.\nQ: likely cause?", "Heart failure.", "Why?", "Oedema, raised JVP.",
             "Next step?", "Echocardiogram.", "Thank you."]
    for name, family in released.FAMILIES.items():
        tokenizer = released.tokenizer_for(family)
        adds_bos = gguf_vocab.adds_bos(tokenizer)
        go = ollama.go_template(tokenizer, adds_bos)
        assert go is not None and "{{ range $i, $_ := .Messages }}" in go, name
        pieces = ollama._pieces(tokenizer, tokenizer.bos_token if adds_bos else None)
        assert (pieces.system is not None) == (name not in ("mistral", "gemma2")), name
        for system in ([None, "Answer briefly."] if pieces.system else [None]):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "assistant" if i % 2 else "user", "content": c} for i, c in enumerate(turns)]
            jinja = chat_text(tokenizer, messages, True)
            assert pieces.render(system, turns) == (jinja.removeprefix(tokenizer.bos_token) if adds_bos else jinja), name
    qwen3 = ollama.go_template(released.tokenizer_for(released.FAMILIES["qwen3"]), False)
    assert qwen3 == (
        '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ else }}{{ end }}'
        '{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
        '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n{{ end }}'
        '{{ if eq .Role "assistant" }}{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}{{ end }}'
        '{{ if and $last (ne .Role "assistant") }}{{ end }}{{ end }}')


def test_a_template_not_made_of_pieces_is_left_to_ollama_and_said(zoo_models, write_recipe, tmp_path, capsys):
    """A template that numbers its turns renders differently each turn: no Go template is written, and it says so."""
    from transformers import AutoTokenizer

    run = trained(write_recipe, zoo_models("llama3"), True, tmp_path, "numbered")
    tokenizer = AutoTokenizer.from_pretrained(run)
    tokenizer.chat_template = ("{% for m in messages %}Turn {{ loop.index }} {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}Turn {{ messages|length + 1 }} assistant:{% endif %}")
    tokenizer.save_pretrained(run)
    assert main(["export", str(run), str(tmp_path / "n.gguf"), "--check", "0", "--modelfile"]) == 0
    assert not any(line.startswith("TEMPLATE") for line in (tmp_path / "Modelfile").read_text().splitlines())
    assert "the chat template could not be written in Ollama's form: Ollama picks one by its likeness" in capsys.readouterr().out
