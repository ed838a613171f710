import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # two threads on a busy 2-core machine ran 3-8x slower
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Prepared data (medsft/data/cache.py) goes to a folder of this test session, never the user's cache.
os.environ.setdefault("MEDSFT_DATA_CACHE", __import__("tempfile").mkdtemp(prefix="medsft-data-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# The real data: $MEDSFT_DATA, else the folder beside this checkout. Product code never looks for it; tests pass it in.
SHARED = Path(os.environ.get("MEDSFT_DATA") or ROOT.parent / "shared" / "data")
PUBMEDQA = SHARED / "pubmedqa" / "ori_pqal.json"
REPORTS = SHARED / "reports" / "mtsamples.jsonl"
needs_pubmedqa = pytest.mark.skipif(not PUBMEDQA.is_file(), reason=f"real PubMedQA data absent: {PUBMEDQA}")
needs_reports = pytest.mark.skipif(not REPORTS.is_file(), reason=f"real report data absent: {REPORTS}")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with a BPE tokenizer trained here on synthetic text: seconds to build, nothing downloaded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from medsft.models import scratch
    from medsft.tasks import synthetic
    from medsft.tasks import pubmedqa

    texts = [pubmedqa.prompt(pubmedqa.normalize(raw)) + " " + raw["final_decision"] for raw in synthetic.pubmedqa_rows(300, 1)]
    texts += [raw["text"] for raw in synthetic.report_rows(300, 1)]
    texts += ["Question: Which drug?\nA. aspirin\nB. heparin\nC. insulin\nD. morphine\nAnswer: B"] * 20
    tokenizer = scratch.train_tokenizer(texts, vocab_size=600)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ChatML whose turns end in the tokenizer's EOS: the end-of-turn token that assistant turns are trained through.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def tiny_chat_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a chat template."""
    import shutil

    from medsft.models.tokenizer import load_tokenizer

    path = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_model, path)
    tokenizer = load_tokenizer(str(path))
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def write_recipe(tmp_path, tiny_model):
    """write_recipe(**keys) -> path of a tiny, fast recipe (overridable key by key)."""

    def write(name="recipe.yaml", **keys):
        recipe = {
            "model_name_or_path": str(tiny_model),
            "task": "pubmedqa",
            "dataset_name": "synthetic",
            "synthetic_size": 80,
            "use_peft": True,
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_target_modules": "all-linear",
            "max_length": 256,
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "eval_strategy": "no",
            "save_strategy": "no",
            "report_to": "none",
            "output_dir": str(tmp_path / "out"),
            "seed": 0,
        }
        recipe.update(keys)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return write


def run_cli(*args, timeout=600, cwd=ROOT, env=None):
    """Run `python -m medsft ARGS` as a user would (`env`: variables to add); returns the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "medsft", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


CPU = {"CUDA_VISIBLE_DEVICES": ""}  # two CPU processes over gloo on any machine: one GPU cannot hold two NCCL ranks


def launch_command(config: str, *args) -> list[str]:
    """`accelerate launch` of medsft on 2 processes with accelerate_configs/CONFIG.yaml, as a user would."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}.yaml",
            "--num_processes", "2", "-m", "medsft", *map(str, args)]


def launch_env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **CPU, **extra}


def launch(config: str, *args, timeout=600):
    """The launch's CompletedProcess; past `timeout` (a hang) every process it started is killed, then the test fails."""
    import signal

    with subprocess.Popen(launch_command(config, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, env=launch_env(), start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its ranks: a hung rank must not outlive the test
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def rank_pid(rank: int, output_dir) -> int | None:
    """The pid of the training process of `rank` writing to output_dir (read from /proc: its environment)."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline, environ = proc.info["cmdline"] or [], proc.info["environ"] or {}
        except (psutil.Error, KeyError):
            continue
        if "medsft" in cmdline and str(output_dir) in cmdline and environ.get("RANK") == str(rank):
            return proc.pid
    return None


@pytest.fixture(scope="session")
def zoo_models(tmp_path_factory):
    """family name -> folder of its tiny model (tests/zoo.py), built on first use."""
    import zoo

    root = tmp_path_factory.mktemp("zoo")
    built: dict[str, Path] = {}

    def model(name: str) -> Path:
        if name not in built:
            built[name] = zoo.build(zoo.FAMILIES[name], root / name)
        return built[name]

    return model
