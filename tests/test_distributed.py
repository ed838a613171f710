"""Two processes on the CPU, as accelerate launches them: DDP, ZeRO-2, ZeRO-3 (LoRA on the tiny model)."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from conftest import CPU, ROOT, launch, launch_command, launch_env, rank_pid, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("dist") / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 80,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
        "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1,
        "eval_strategy": "no", "save_strategy": "no", "report_to": "none", "seed": 0,
        "bf16": False,  # DeepSpeed's bf16 keeps bf16 weights, DDP's autocast fp32 ones: compare in fp32
        "max_test_samples": 16, "sample_count": 1, "sample_max_new_tokens": 4,
    }))
    return path


@pytest.fixture(scope="module")
def runs(recipe):
    out = {}
    variants = {
        "multi_process": ("multi_process",),
        "zero2": ("zero2",),
        "zero3": ("zero3",),
        # the recipe's own `deepspeed` key under a plain DDP launch
        "zero3_from_recipe": ("multi_process", "--deepspeed", "accelerate_configs/deepspeed/zero3.json"),
    }
    for name, (config, *extra) in variants.items():
        out[name] = recipe.parent / name
        proc = launch(config, recipe, "--output_dir", out[name], *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "terminate called" not in proc.stderr
        assert proc.stdout.count("medsft: training done") == 1, proc.stdout  # only the main process prints
        assert proc.stdout.count("medsft report") == 1
    return out


def final_loss(output_dir):
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h][-1]


@pytest.mark.parametrize("config", ["multi_process", "zero2", "zero3", "zero3_from_recipe"])
def test_two_processes_train_and_save_a_trained_adapter(runs, config):
    weights = load_file(runs[config] / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert len(lora_b) == 14  # 7 linear layers x 2 blocks; an empty ZeRO-3 save would hold none or zeros
    assert all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: nonzero means trained and gathered


def test_zero2_loss_matches_ddp(runs):
    assert final_loss(runs["zero2"]) == pytest.approx(final_loss(runs["multi_process"]), abs=1e-4)
    assert final_loss(runs["zero3"]) == pytest.approx(final_loss(runs["multi_process"]), abs=1e-4)
    assert final_loss(runs["zero3_from_recipe"]) == pytest.approx(final_loss(runs["multi_process"]), abs=1e-4)


@pytest.mark.parametrize("config", ["multi_process", "zero3"])
def test_evaluation_equals_a_single_process_reload(runs, recipe, config):
    sharded = json.loads((runs[config] / "eval_results.json").read_text())
    proc = run_cli("eval", recipe, "--output_dir", runs[config], env=CPU)
    assert proc.returncode == 0, proc.stderr
    single = json.loads((runs[config] / "eval_results.json").read_text())
    # 16 test items for base and tuned: each of the two processes scored half, one process all of them
    assert sharded["run"]["scored_per_process"] == [16, 16] and single["run"]["scored_per_process"] == [32]
    assert sharded["evaluations"] == single["evaluations"]  # every metric, interval, test and sample


def test_bf16_evaluation_on_two_processes_equals_one(runs, recipe):
    # bf16 rounding depends on how rows are batched and padded: shares of whole batches keep every batch as it is
    out = runs["multi_process"]
    proc = launch("multi_process", "eval", recipe, "--output_dir", out, "--bf16", "true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads((out / "eval_results.json").read_text())
    proc = run_cli("eval", recipe, "--output_dir", out, "--bf16", "true", env=CPU)
    assert proc.returncode == 0, proc.stderr
    single = json.loads((out / "eval_results.json").read_text())
    assert sharded["run"]["scored_per_process"] == [16, 16] and single["run"]["scored_per_process"] == [32]
    assert sharded["evaluations"] == single["evaluations"]


def test_zero3_exits_cleanly_five_times(recipe, tmp_path):
    for i in range(5):
        proc = launch("zero3", recipe, "--output_dir", tmp_path / f"run{i}", "--max_steps", 1, "--eval_after_train", "false")
        assert proc.returncode == 0 and "terminate called" not in proc.stderr, f"run {i}: {proc.stderr[-2000:]}"


def test_sigterm_to_one_rank_stops_both_at_one_step(recipe, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    cmd = launch_command("multi_process", recipe, "--output_dir", out, "--max_steps", 3000, "--save_strategy", "steps",
                         "--save_steps", 100000, "--eval_after_train", "false")
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=launch_env())
    deadline = time.time() + 300
    while not list(out.glob("recipe.yaml")) and time.time() < deadline:  # written just before the first step
        time.sleep(0.5)
    time.sleep(3)
    pid = rank_pid(1, out)
    assert pid is not None, "rank 1 not found"
    os.kill(pid, signal.SIGTERM)  # the other rank receives nothing
    stdout, stderr = launcher.communicate(timeout=300)
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, (stdout[-2000:], stderr[-3000:])
    step = int(checkpoints[0].name.split("-")[1])
    assert 0 < step < 3000
    assert json.loads((checkpoints[0] / "trainer_state.json").read_text())["global_step"] == step
    assert (checkpoints[0] / "adapter_model.safetensors").is_file()
    assert f"stopped by SIGTERM after step {step}" in " ".join(stdout.split())
    # both ranks exited with 128 + SIGTERM: torchrun's summary names each rank with its exit code
    import re

    assert sorted(re.findall(r"rank\s+: (\d) \(local_rank.*\n\s+exitcode\s+: (\d+)", stderr)) == [("0", "143"), ("1", "143")], stderr[-3000:]
    assert "terminate called" not in stderr
    resumed = launch("multi_process", recipe, "--output_dir", out, "--max_steps", step + 2, "--save_strategy", "no",
                     "--eval_after_train", "false", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == step + 2


def _dry_run(*args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("NNODES", "SLURM_NNODES", "SLURM_NODEID", "NODE_RANK", "NPROC")}
    full.update(DRY_RUN="1", **env)
    return subprocess.run(["bash", str(ROOT / "launch.sh"), *args], capture_output=True, text=True, env=full, cwd="/")


@pytest.mark.parametrize("env,expected", [
    ({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29400"},
     "--num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.7 --main_process_port 29400"),
    ({"SLURM_NNODES": "4", "SLURM_NODEID": "3", "MASTER_ADDR": "node01"},
     "--num_machines 4 --machine_rank 3 --main_process_ip node01 --main_process_port 29500"),
])
def test_launch_sh_takes_multi_node_settings_from_the_environment(env, expected):
    proc = _dry_run("zero3", "recipes/quickstart.yaml", "--learning_rate", "1e-4", **env)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"+ accelerate launch --config_file {ROOT}/accelerate_configs/zero3.yaml "
                           f"--deepspeed_config_file {ROOT}/accelerate_configs/deepspeed/zero3.json")
    assert expected in line and line.endswith("-m medsft recipes/quickstart.yaml --learning_rate 1e-4")


def test_launch_sh_help_and_unknown_config():
    proc = _dry_run("--help")
    assert proc.returncode == 0 and "NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT" in proc.stdout and "zero2_offload" in proc.stdout
    proc = _dry_run("zero7", "recipes/quickstart.yaml")
    assert proc.returncode == 2 and proc.stderr.startswith("launch.sh: error: no accelerate config")


def test_two_processes_tokenize_the_data_once(recipe, tmp_path):
    """Under accelerate launch the main process prepares the data and the other reads what it wrote (data/cache.py):
    the rows are tokenized by one process only, as often as one process alone tokenizes them."""
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('COUNT_ENCODE'):\n"
        "    import medsft.data.encoding as encoding\n"
        "    original = encoding.encode\n"
        "    def counted(*args, **kwargs):\n"
        "        with open(os.environ['COUNT_ENCODE'], 'a') as f:\n"
        "            f.write(f'{os.getpid()}\\n')\n"
        "        return original(*args, **kwargs)\n"
        "    encoding.encode = counted\n")
    counts = {}
    for processes in (1, 2):
        log = tmp_path / f"encode-{processes}.log"
        env = launch_env(PYTHONPATH=f"{spy}{os.pathsep}{ROOT}", COUNT_ENCODE=str(log),
                         MEDSFT_DATA_CACHE=str(tmp_path / f"cache-{processes}"))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               f"accelerate_configs/{'multi_process' if processes > 1 else 'single_process'}.yaml", "--num_processes",
               str(processes), "-m", "medsft", "preview", str(recipe), "-n", "1", "--eval_strategy", "steps"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts[processes] = log.read_text().split()
    assert len(counts[1]) == 2  # the training rows and the dev rows
    assert len(counts[2]) == len(counts[1]) and len(set(counts[2])) == 1  # one process tokenized them, once


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_fsdp2_trains_on_two_processes_and_its_whole_weights_load_in_eval_and_merge(recipe, tmp_path, peft):
    """FSDP2 (accelerate_configs/fsdp2.yaml) on two CPU processes over gloo: the run trains, saves whole weights (a full
    state dict, or a full adapter) whose tensors have the model's own shapes, and `eval` of the run gives the numbers
    training reported; a LoRA run merges."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    keys = ["--use_peft", "true"] if peft else ["--use_peft", "false", "--learning_rate", "1e-3"]
    proc = launch("fsdp2", recipe, "--output_dir", out, *keys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = load_file(out / ("adapter_model.safetensors" if peft else "model.safetensors"))
    base = load_file(next(recipe.parent.parent.glob("tiny-llama*")) / "model.safetensors") if not peft else None
    if peft:
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # trained, and whole (rank x width)
        assert all(v.shape[0] == 4 or v.shape[1] == 4 for k, v in saved.items())
    else:
        assert saved.keys() == base.keys() and all(saved[k].shape == base[k].shape for k in saved)
    trained = json.loads((out / "eval_results.json").read_text())["evaluations"][0]["models"]["tuned"]
    proc = run_cli("eval", out)  # one process, the saved weights: the run's results written again
    assert proc.returncode == 0, proc.stderr
    again = json.loads((out / "eval_results.json").read_text())["evaluations"][0]["models"]["tuned"]
    assert again["accuracy"] == trained["accuracy"]
    if peft:
        assert run_cli("merge", out, tmp_path / "merged").returncode == 0
