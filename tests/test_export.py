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
    run = trained(write_recipe, zoo_models("llama3"), True, tmp_path, "llama3", chat=True)
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

        from medsft.export.read_back import read_back

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
    from medsft.export import gguf_vocab, ollama

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

    run = trained(write_recipe, zoo_models("llama3"), True, tmp_path, "numbered", chat=True)
    tokenizer = AutoTokenizer.from_pretrained(run)
    tokenizer.chat_template = ("{% for m in messages %}Turn {{ loop.index }} {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}Turn {{ messages|length + 1 }} assistant:{% endif %}")
    tokenizer.save_pretrained(run)
    assert main(["export", str(run), str(tmp_path / "n.gguf"), "--check", "0", "--modelfile"]) == 0
    assert not any(line.startswith("TEMPLATE") for line in (tmp_path / "Modelfile").read_text().splitlines())
    assert "the chat template could not be written in Ollama's form: Ollama picks one by its likeness" in capsys.readouterr().out


def gemma2_variant(zoo_models, to, layers: int, scalar: int):
    """The zoo's Gemma-2 rebuilt with a head size (8) other than hidden / heads (16), `layers` deep, queries scaled by
    `scalar` (16: hidden / heads, what llama.cpp uses at 46 layers only), its attention sharpened."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(zoo_models("gemma2"), to)
    config = AutoConfig.from_pretrained(to)
    config.num_hidden_layers, config.head_dim, config.query_pre_attn_scalar = layers, 8, scalar
    config.layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]  # Gemma-2's
    for old in to.glob("model*.safetensors"):
        old.unlink()
    import torch

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(to)
    return released.sharpened(to)


def test_gemma2s_query_scale_is_the_one_llama_cpp_uses_at_the_models_depth(zoo_models, write_recipe, tmp_path, capsys):
    """llama.cpp scales Gemma-2's queries by hidden / heads at 46 layers (the 27B) and by the head size at any other
    depth: a 46-layer model scaled so reads back as the run; the same scale at 4 layers, which llama.cpp would not
    apply, is refused in one line with nothing written."""
    deep = trained(write_recipe, gemma2_variant(zoo_models, tmp_path / "deep", 46, 16), True, tmp_path, "deep-run")
    assert main(["export", str(deep), str(tmp_path / "deep.gguf"), "--check", "8"]) == 0
    tokens = json.loads((tmp_path / "deep.check.json").read_text())["next_tokens"]
    assert tokens["max_logprob_difference"] <= 1e-2 and tokens["top1_agreement"] >= 0.99, tokens
    shallow = trained(write_recipe, gemma2_variant(zoo_models, tmp_path / "shallow", 4, 16), True, tmp_path, "shallow-run")
    capsys.readouterr()
    assert main(["export", str(shallow), str(tmp_path / "shallow.gguf")]) == 2
    assert capsys.readouterr().err.strip() == (
        "medsft: error: query_pre_attn_scalar 16 is not what llama.cpp's Gemma-2 uses for a 4-layer model (8: "
        "hidden_size / num_attention_heads at 46 layers, the 27B, else head_dim); this model cannot be exported")
    assert not list(tmp_path.glob("*shallow.gguf*"))


def test_a_plain_prompt_runs_modelfile_passes_the_prompt_as_written_and_the_modelfile_needs_force(
        zoo_models, write_recipe, tmp_path, capsys):
    """A run trained on plain prompts (chat: false) never trained through the tokenizer's chat template: its
    Modelfile's TEMPLATE is the prompt as written, and the command says so. An existing Modelfile is replaced only
    with --force, like the GGUF file, and refused before anything is written."""
    run = trained(write_recipe, zoo_models("llama3"), True, tmp_path, "plain")  # the zoo's Llama-3 has a template
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "p.gguf"), "--check", "0", "--modelfile"]) == 0
    out = capsys.readouterr().out
    assert out.index("in its saved precision") < out.index("writing") < out.index("wrote ")  # each step as it starts
    assert ("the run trained on plain prompts: its TEMPLATE passes a prompt as written ({{ .Prompt }}), so give it "
            "prompts in the form the run trained on, not a chat") in out
    modelfile = tmp_path / "Modelfile"
    assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile.read_text().splitlines()
    assert json.loads((tmp_path / "p.check.json").read_text())["modelfile"]["template"] == "plain"
    modelfile.write_text("mine\n")
    assert main(["export", str(run), str(tmp_path / "q.gguf"), "--check", "0", "--modelfile"]) == 2
    assert capsys.readouterr().err.strip() == f"medsft: error: {modelfile} exists; pass --force to replace it"
    assert modelfile.read_text() == "mine\n" and not (tmp_path / "q.gguf").exists()
    assert main(["export", str(run), str(tmp_path / "q.gguf"), "--check", "0", "--modelfile", "--force"]) == 0
    assert modelfile.read_text().startswith("FROM ./q.gguf\n")


@pytest.mark.parametrize("kind, same_answer, p, verdict", [
    ("q8_0", 0.965, 1.0, True),  # near-ties moved both ways, accuracy no different: the file gives the run's answers
    ("q8_0", 0.90, 1.0, False),  # too many answers moved, whatever the accuracy
    ("q8_0", 0.96, 0.01, False),  # moved one way: accuracy differs
    ("f16", 0.965, 1.0, False),  # f16 only rounds: near-ties should hardly move
])
def test_the_verdict_weighs_agreement_and_the_paired_test(kind, same_answer, p, verdict):
    from medsft.export.read_back import verdict as judged

    found = {"tokens": {"texts": 16, "same": 1.0},
             "items": {"pubmedqa": {"n": 200, "run_accuracy": 0.70, "exported_accuracy": 0.695, "same_answer": same_answer,
                                    "test": {"p_value": p}}}}
    assert judged(found, kind)[0] is verdict
    assert judged({**found, "tokens": {"texts": 16, "same": 15 / 16}}, kind)[0] is False  # other tokens: never


def test_the_writer_holds_one_tensor_at_a_time_not_a_copy_of_the_model(tmp_path):
    """numpy's allocations are what the writer adds to the loaded model: their peak stays near one tensor's size,
    far under the model's (converting every tensor before writing held them all)."""
    import tracemalloc

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medsft.export import gguf_writer
    import zoo

    tokenizer = zoo.tokenizer_for(zoo.FAMILIES["llama3"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=4))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    tracemalloc.start()
    try:
        gguf_writer.write(model, tokenizer, tmp_path / "m.gguf", "f16", "m", {}, None, [])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "m.gguf").stat().st_size > size / 2.2  # every weight written, in f16
    assert peak < size / 6, (peak, size)
