"""Training throughput on real data, measured side by side in one run.

    python bench/train_throughput.py [--samples 192] [--rounds 1] [--batch 8]     # ~15 minutes on 2 cores
    python bench/train_throughput.py --variants lm-grouped,lm-packed,lm-padding-free --samples 256

Each variant trains one epoch over the same `samples` training rows (official train split), so every variant sees
the same examples whatever order its sampler picks. Length grouping needs a few batches per mega-batch
(transformers uses len // (4 * batch) batches), so fewer than ~128 rows shows no grouping at all. Variants are interleaved round by round so machine noise hits
them alike; medians are reported:
  medsft     the runner as a user gets it (recipes/pubmedqa_lora.yaml; random batches)
  medsft-grouped  the same with train_sampling_strategy: group_by_length (less padding; see config.DEFAULTS)
  medsft-bf16-base  the same with the frozen base loaded in bfloat16 (dtype: bfloat16) instead of float32 + autocast
  plain-trl  a hand-written TRL script: prompt/completion rows, SFTTrainer tokenizes, same settings
  padded     the seed scripts' way: every example padded to max_length
  raw        the reference: a raw PyTorch + peft loop (forward with labels, backward, AdamW) on the same token ids
Language modelling (recipes/scratch_gpt2_reports.yaml on MTSamples, notes split into max_length pieces):
  lm-grouped       packing false: pieces in length-grouped batches, padded to the longest of each batch
  lm-packed        packing true: pieces packed best-fit into max_length rows, each row attending within its documents
  lm-padding-free  packing true, padding_free true: TRL's flattening of the whole batch into one row
Prints trained (non-padding) tokens/s, examples/s, the ratios, and model FLOP/s as a fraction of this machine's
matmul peak measured in the same run (bf16 and fp32).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import DATA as SHARED, StepTimer, device, matmul_peak, median_rate, peak_memory, synchronize  # noqa: E402

from medsft.models import locate
from medsft.models.tokenizer import load_tokenizer
from medsft.recipe.parser import parse_recipe
from medsft.training import fit, prepare

DATA = SHARED / "pubmedqa" / "ori_pqal.json"
NOTES = SHARED / "reports" / "mtsamples.jsonl"


class PeakRSS:
    """The process's largest resident set size while the block runs (sampled every 50 ms)."""

    def __enter__(self):
        import threading

        import psutil

        self.peak, self._stop, process = 0, threading.Event(), psutil.Process()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, process.memory_info().rss)
                self._stop.wait(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def recipe_for(samples: int, batch: int, out: str, recipe: str = "pubmedqa_lora", **overrides):
    data = NOTES if recipe == "scratch_gpt2_reports" else DATA
    args = [str(ROOT / "recipes" / f"{recipe}.yaml"), "--dataset_name", str(data), "--num_train_epochs", "1"]
    args += ["--max_train_samples", str(samples)]
    args += ["--per_device_train_batch_size", str(batch), "--output_dir", out, "--overwrite_output_dir", "true"]
    args += ["--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true"]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return parse_recipe(args)


def measure_medsft(samples, batch, out, recipe_name="pubmedqa_lora", **overrides) -> StepTimer:
    recipe = recipe_for(samples, batch, out, recipe_name, **overrides)
    from transformers import PrinterCallback

    timer = StepTimer(warmup=0)
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe), callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return timer


def measure_plain_trl(samples, batch, out) -> StepTimer:
    """What a user writes by hand: format rows to prompt/completion, let SFTTrainer do the rest."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from medsft.data import datasets as data

    from medsft.recipe import mixture

    recipe = recipe_for(samples, batch, out)  # only to read the same rows, split and hyper-parameters
    a = recipe.training
    [source] = data.load(mixture.specs(recipe.script, a))
    dataset = Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in data.examples(source, "train")])
    config = SFTConfig(
        output_dir=out, num_train_epochs=1, per_device_train_batch_size=batch, learning_rate=a.learning_rate,
        lr_scheduler_type=a.lr_scheduler_type, warmup_steps=a.warmup_steps, max_length=a.max_length,
        use_cpu=a.use_cpu, bf16=a.bf16, gradient_checkpointing=False, activation_checkpointing=False,
        logging_steps=1, save_strategy="no", report_to="none", seed=a.seed, disable_tqdm=True,
        include_num_input_tokens_seen="non_padding", truncation_mode="keep_end",
        train_sampling_strategy=a.train_sampling_strategy,
    )
    m = recipe.model
    lora = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                      target_modules=m.lora_target_modules, task_type="CAUSAL_LM")
    timer = StepTimer(warmup=0)
    trainer = SFTTrainer(model=locate.resolve(m.model_name_or_path), args=config, train_dataset=dataset,
                         peft_config=lora, callbacks=[timer])
    trainer.train()
    return timer


def measure_raw(samples, batch, out) -> StepTimer:
    """The reference: a raw PyTorch + peft loop over the same token ids (forward with labels, backward, AdamW step),
    in the recipe's batches (random, or of similar lengths), bf16 autocast as the recipe says. No Trainer, no metrics, no callbacks."""
    import random
    import time

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM


    recipe = recipe_for(samples, batch, out)
    a, m = recipe.training, recipe.model
    path = locate.resolve(m.model_name_or_path)
    tokenizer = load_tokenizer(path)
    examples = list(prepare.prepare(recipe).train_dataset)  # the same token ids and labels medsft trains on
    random.Random(a.seed).shuffle(examples)
    if a.train_sampling_strategy == "group_by_length":
        groups = [sorted(examples[i : i + 4 * batch], key=lambda e: len(e["input_ids"])) for i in range(0, len(examples), 4 * batch)]
        examples = [e for g in groups for e in g]
    batches = [examples[j : j + batch] for j in range(0, len(examples), batch)]
    torch.manual_seed(a.seed)
    where = device()
    # the strongest honest loop on each device: on CUDA bf16 frozen weights and fused AdamW; on the CPU float32
    # weights under bf16 autocast (what medsft does there)
    cuda = where.type == "cuda"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32).to(where)
    lora = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                      target_modules=m.lora_target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.learning_rate, fused=cuda or None)
    timer = StepTimer(warmup=0)
    pad = tokenizer.pad_token_id
    for chunk in batches:
        width = max(len(e["input_ids"]) for e in chunk)
        ids = torch.full((len(chunk), width), pad)
        labels = torch.full((len(chunk), width), -100)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, e in enumerate(chunk):
            n = len(e["input_ids"])
            ids[r, :n] = torch.tensor(e["input_ids"])
            attention[r, :n] = 1
            labels[r, :n] = torch.tensor(e["labels"])
        ids, attention, labels = ids.to(where), attention.to(where), labels.to(where)
        synchronize(where)
        start = time.perf_counter()
        with torch.autocast(where.type, dtype=torch.bfloat16, enabled=bool(a.bf16)):
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(where)
        timer.times.append(time.perf_counter() - start)
        timer.tokens.append(int(attention.sum()))
    return timer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=192, help="training rows per measurement (one epoch)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variants", default="medsft,plain-trl,padded,raw", help="comma-separated subset to run")
    args = parser.parse_args()
    if not DATA.is_file() or not NOTES.is_file():
        sys.exit(f"needs the PubMedQA and MTSamples data at {DATA.parent.parent}")

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()

    out = tempfile.mkdtemp(prefix="medsft-bench-")
    variants = {
        "medsft": lambda: measure_medsft(args.samples, args.batch, out),
        "medsft-bf16-base": lambda: measure_medsft(args.samples, args.batch, out, dtype="bfloat16"),
        "medsft-grouped": lambda: measure_medsft(args.samples, args.batch, out, train_sampling_strategy="group_by_length"),
        "plain-trl": lambda: measure_plain_trl(args.samples, args.batch, out),
        "padded": lambda: measure_medsft(args.samples, args.batch, out, pad_to_multiple_of=512, train_sampling_strategy="random"),
        "raw": lambda: measure_raw(args.samples, args.batch, out),
        "lm-grouped": lambda: measure_medsft(args.samples, args.batch, out, "scratch_gpt2_reports", packing="false",
                                             train_sampling_strategy="group_by_length"),
        "lm-packed": lambda: measure_medsft(args.samples, args.batch, out, "scratch_gpt2_reports", packing="true"),
        "lm-padding-free": lambda: measure_medsft(args.samples, args.batch, out, "scratch_gpt2_reports", packing="true",
                                                  padding_free="true"),
    }
    variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    tok_rate = {k: [] for k in variants}
    peak_rss = {k: [] for k in variants}
    losses: dict[str, list[float]] = {}
    ex_rate = {k: [] for k in variants}
    peaks = {"bf16": [], "fp32": []}
    where = device()
    for r in range(args.rounds):
        peaks["bf16"].append(matmul_peak(torch.bfloat16, n=8192 if where.type == "cuda" else 2048, where=where))
        peaks["fp32"].append(matmul_peak(torch.float32, n=8192 if where.type == "cuda" else 2048, where=where))
        for name, run in variants.items():
            if where.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with PeakRSS() as rss:
                timer = run()
            peak_rss[name].append(rss.peak)
            losses[name] = timer.losses
            gpu = peak_memory(where)
            seconds = sum(timer.times)
            tok_rate[name].append(sum(timer.tokens) / seconds)
            ex_rate[name].append(args.batch * len(timer.times) / seconds)
            print(f"round {r + 1} {name:10s} {tok_rate[name][-1]:8.1f} tokens/s {ex_rate[name][-1]:6.3f} examples/s "
                  f"peak RSS {peak_rss[name][-1] / 2**30:.2f} GiB" + (f", GPU {gpu / 2**30:.2f} GiB" if gpu else ""), flush=True)

    lm = [k for k in variants if k.startswith("lm-")]
    if lm:
        best = max(lm, key=lambda k: median_rate(tok_rate[k]))
        print("\nlanguage modelling, trained tokens/s relative to the fastest (" + best + "): " +
              ", ".join(f"{k} {median_rate(tok_rate[k]) / median_rate(tok_rate[best]):.2f}" for k in lm))
        variants = {k: v for k, v in variants.items() if k not in lm}
        if not variants:
            return
    med = {k: median_rate(v) for k, v in tok_rate.items()}
    med_ex = {k: median_rate(v) for k, v in ex_rate.items()}
    peak = {k: median_rate(v) for k, v in peaks.items()}
    recipe = recipe_for(1, args.batch, out)
    from transformers import AutoConfig


    config = AutoConfig.from_pretrained(locate.resolve(recipe.model.model_name_or_path))
    n_matmul = _matmul_params(config)
    # LoRA: forward 2N and backward activation-gradients 2N FLOPs a token; frozen weights get no weight-gradient.
    flops_per_token = 4 * n_matmul
    print(f"\nthreads {torch.get_num_threads()}, batch {args.batch}, {args.samples} rows x {args.rounds} rounds, precision {'bf16' if recipe.training.bf16 else 'fp32'}")
    print(f"matmul peak: bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s")
    print(f"{'variant':10s} {'tokens/s':>9s} {'examples/s':>11s} {'GFLOP/s':>8s} {'of bf16 peak':>13s} {'of fp32 peak':>13s}")
    for name in variants:
        flops = med[name] * flops_per_token
        print(f"{name:10s} {med[name]:9.1f} {med_ex[name]:11.3f} {flops / 1e9:8.1f} {flops / peak['bf16']:13.1%} {flops / peak['fp32']:13.1%}")
    if {"medsft", "medsft-bf16-base"} <= set(variants):
        print(f"\nfrozen base bf16 / float32 + autocast (trained tokens/s): {med['medsft-bf16-base'] / med['medsft']:.3f}; "
              f"peak RSS {max(peak_rss['medsft-bf16-base']) / 2**30:.2f} vs {max(peak_rss['medsft']) / 2**30:.2f} GiB")
        pairs = list(zip(losses["medsft-bf16-base"], losses["medsft"]))
        if pairs:
            print(f"training loss, same steps: largest difference {max(abs(a - b) for a, b in pairs):.4f} over {len(pairs)} "
                  f"steps (final {pairs[-1][0]:.4f} vs {pairs[-1][1]:.4f})")
    if {"medsft", "plain-trl"} <= set(variants):
        print(f"\nmedsft / plain-trl (trained tokens/s): {med['medsft'] / med['plain-trl']:.3f}   target >= 0.97")
    if {"medsft", "raw"} <= set(variants):
        print(f"medsft / raw loop  (trained tokens/s): {med['medsft'] / med['raw']:.3f}   target >= 0.9")
    if {"medsft", "padded"} <= set(variants):
        print(f"medsft / padded    (examples/s):       {med_ex['medsft'] / med_ex['padded']:.3f}   target >= 1.3")


def _matmul_params(config) -> int:
    """Weights that take part in a matmul per token: every decoder linear plus the LM head."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return layers * per_layer + h * config.vocab_size


if __name__ == "__main__":
    main()
