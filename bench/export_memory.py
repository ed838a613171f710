"""`medsft export` of a ~1B-parameter model: wall time and peak RSS of the whole command, for f16 and q8_0, without
the check (--check 0) and with it, measured side by side in one run. The run folder is a real medsft run (a full
fine-tune of a tiny Llama with SmolLM2's tokenizer, one step) whose weights are then replaced by a random Llama of
Llama-3.2-1B's shape (2048 wide, 16 layers, 32 query and 8 key-value heads, 8192 feed-forward) built from a config
and saved in bfloat16, as released models are: its saved size is what an export may hold, plus one tensor.

    python bench/export_memory.py [--check 20] [--types f16,q8_0]

Nothing is downloaded: the tokenizer is the embedded SmolLM2's."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def base_model(folder: Path) -> tuple[Path, int]:
    """A tiny Llama with SmolLM2's tokenizer, for the one-step run whose folder the big model moves into."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    sys.path.insert(0, str(ROOT))
    from medsft.models import locate

    tokenizer = AutoTokenizer.from_pretrained(locate.resolve("smollm2-135m-instruct"))
    torch.manual_seed(0)
    LlamaForCausalLM(shape(len(tokenizer), tiny=True)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, len(tokenizer)


def shape(vocab: int, tiny: bool = False):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaConfig(vocab_size=vocab, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True, max_position_embeddings=4096)


def run_folder(folder: Path, env: dict) -> Path:
    """A one-step full fine-tune of the tiny base, then its weights replaced by the ~1B model's, in bfloat16."""
    import torch
    from transformers import LlamaForCausalLM

    base, vocab = base_model(folder / "base")
    recipe = folder / "bench.yaml"
    recipe.write_text(f"model_name_or_path: {base}\ntask: pubmedqa\ndataset_name: synthetic\nsynthetic_size: 300\n"
                      f"use_peft: false\nmax_steps: 1\nper_device_train_batch_size: 2\nmax_length: 256\n"
                      f"eval_after_train: false\nsave_strategy: 'no'\nreport_to: none\noutput_dir: {folder / 'run'}\n")
    proc = subprocess.run([sys.executable, "-m", "medsft", str(recipe)], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    run = folder / "run"
    for old in run.glob("model*.safetensors"):
        old.unlink()
    config = shape(vocab)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(run)
    params = sum(p.numel() for p in model.parameters())
    del model
    return run, params


def measured(argv: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GiB, the verdict line) of one command, by GNU time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "medsft", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 2**20
    verdict = next((line for line in proc.stdout.splitlines() if line.startswith("the exported model")), "")
    return wall, peak, verdict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", type=int, default=20, help="test items scored by both models in the checked runs")
    parser.add_argument("--types", default="f16,q8_0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDSFT_DATA_CACHE": str(folder / "cache")}
        run, params = run_folder(folder, env)
        saved = sum(f.stat().st_size for f in run.glob("*.safetensors")) / 2**30
        print(f"a random Llama of {params / 1e9:.2f}B parameters, saved in bfloat16: {saved:.2f} GiB "
              f"({os.cpu_count()} cores)")
        print("| type | check | wall s | peak RSS GiB | peak / saved size | verdict |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for kind in args.types.split(","):
            for items in sorted({0, args.check}):
                out = folder / f"m-{kind}-{items}.gguf"
                wall, peak, verdict = measured(["export", str(run), str(out), "--type", kind, "--check", str(items)], env)
                shown = verdict.split(";")[0][:60]
                print(f"| {kind} | {items or 'none (--check 0)'} | {wall:.1f} | {peak:.2f} | {peak / saved:.2f}x | {shown} |")
                out.unlink()


if __name__ == "__main__":
    main()
