import json
from pathlib import Path

import pytest
import torch

from medsft.recipe.parser import parse_recipe
from medsft.errors import UserError

from conftest import ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses(path):
    import torch

    if "load_in_4bit: true" in path.read_text() and not torch.cuda.is_available():
        with pytest.raises(UserError, match="load_in_4bit: .* needs a CUDA GPU"):
            parse_recipe([str(path)])
        return
    if "use_vllm: true" in path.read_text():
        import importlib.util

        if not torch.cuda.is_available():
            with pytest.raises(UserError, match="use_vllm: vLLM generation .* needs a CUDA GPU"):
                parse_recipe([str(path)])
            return
        if importlib.util.find_spec("vllm") is None:
            with pytest.raises(UserError, match="use_vllm: vLLM is not installed"):
                parse_recipe([str(path)])
            return
    recipe = parse_recipe([str(path)])
    assert recipe.model.model_name_or_path
    from medsft.tasks import NAMES

    assert recipe.script.task in NAMES
    header = path.read_text().split("\n\n")[0]
    assert header.startswith("#") and "-m medsft" in header, "a recipe starts with a comment giving its launch line"


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_accelerate_config_parses(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)  # accelerate's own loader: an unknown key raises ValueError
    assert config.num_processes >= 1
    if config.distributed_type == "DEEPSPEED":
        ds_file = ROOT / config.deepspeed_config["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        # never contradict the recipe: batch sizes, precision and clipping come from it
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
            assert ds[key] == "auto", (ds_file, key)
        assert ds["bf16"]["enabled"] == "auto" and ds["fp16"]["enabled"] == "auto"
        assert str(ds["zero_optimization"]["stage"]) in path.stem
        assert config.mixed_precision in (None, "no")  # accelerate refuses one beside a deepspeed_config_file
    if config.distributed_type == "FSDP":  # whole weights at save time, loadable by eval and merge
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert config.mixed_precision in (None, "no")  # the recipe's bf16 decides


def test_cli_overrides_recipe_and_cpu_defaults(write_recipe):
    recipe = parse_recipe([str(write_recipe(learning_rate=1e-3)), "--learning_rate", "2e-4", "--max_steps", "7"])
    assert recipe.training.learning_rate == pytest.approx(2e-4)
    assert recipe.training.max_steps == 7
    assert recipe.training.use_cpu is not torch.cuda.is_available()  # the CPU default only where there is no CUDA
    assert recipe.training.activation_checkpointing is False
    assert recipe.resolved()["max_steps"] == 7


def test_recipe_can_force_fp32(write_recipe):
    assert parse_recipe([str(write_recipe(bf16=False))]).training.bf16 is False


def test_yaml_scientific_notation_without_dot_is_a_float(write_recipe):
    path = write_recipe()
    text = path.read_text().replace("learning_rate: 0.005", "learning_rate: 1e-4")
    Path(path).write_text(text)
    assert parse_recipe([str(path)]).training.learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"learning_rat": 1e-3}, "unknown key 'learning_rat' in {path}; did you mean 'learning_rate'?"),
        ({"max_steps": "ten"}, "key 'max_steps' in {path} must be an integer, got 'ten'"),
        ({"use_peft": "maybe"}, "key 'use_peft' in {path} must be true/false, got 'maybe'"),
        ({"task": "radiology"}, "key 'task' in {path} must be one of pubmedqa, report, text, prompt_completion, messages, "
                                "template, multiple_choice, medqa, medmcqa, mmlu, preference, got 'radiology'"),
    ],
)
def test_bad_keys_name_the_key(write_recipe, keys, message):
    path = write_recipe(**keys)
    with pytest.raises(UserError) as e:
        parse_recipe([str(path)])
    assert str(e.value) == message.format(path=path)


def test_ddp_timeout_reaches_the_process_group_on_every_parse_and_has_a_cpu_default(write_recipe, tmp_path):
    """transformers hands ddp_timeout to the process group it creates only on a GPU, and a group created first keeps
    its own: every command's recipe (trained or only loaded) sets it. In a process of its own, in a group of one."""
    import subprocess
    import sys

    from conftest import ROOT
    from medsft.recipe.hardware import CPU_TIMEOUT

    recipe = write_recipe()
    assert parse_recipe([str(recipe)]).training.ddp_timeout == (1800 if torch.cuda.is_available() else CPU_TIMEOUT)
    with pytest.raises(UserError, match=r"^ddp_timeout must be a whole number of seconds of at least 1, got 0$"):
        parse_recipe([str(recipe), "--ddp_timeout", "0"])
    script = (
        "import datetime, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo', rank=0, world_size=1, init_method='tcp://127.0.0.1:0')\n"
        "from medsft.recipe.parser import parse_recipe\n"
        "def timeout():\n"
        "    return dist.distributed_c10d._get_default_group()._get_backend(torch.device('cpu')).options._timeout.total_seconds()\n"
        "before = timeout()\n"
        f"parse_recipe([{str(recipe)!r}, '--ddp_timeout', '77'])\n"
        "trained = timeout()\n"
        f"parse_recipe([{str(recipe)!r}, '--ddp_timeout', '88'], loading=True)\n"
        "print(before, trained, timeout())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["1800.0", "77.0", "88.0"]


@pytest.mark.parametrize("removed, expected", [
    (("_set_pg_timeout",), "66.0"),  # torch's private setter renamed: the process group's public one
    (("_set_pg_timeout", "set_timeout"), "1800.0"),  # neither: the group keeps its own, said in one line
])
def test_ddp_timeout_survives_torch_renaming_its_private_setter(write_recipe, removed, expected):
    """medsft reaches torch's private `_set_pg_timeout`: where a torch release renames it, every command still
    imports and parses, the timeout set through the group's own `set_timeout` (or, without either, kept and said)."""
    import subprocess
    import sys

    from conftest import ROOT

    recipe = write_recipe()
    script = (
        "import torch, torch.distributed as dist, torch.distributed.distributed_c10d as c10d\n"
        f"for name in {removed!r}:\n"
        "    if name == 'set_timeout':\n"
        "        delattr(dist.ProcessGroup, name)\n"
        "    else:\n"
        "        delattr(c10d, name)\n"
        "dist.init_process_group('gloo', rank=0, world_size=1, init_method='tcp://127.0.0.1:0')\n"
        "from medsft.recipe.parser import parse_recipe\n"
        f"parse_recipe([{str(recipe)!r}, '--ddp_timeout', '66'])\n"
        "print(c10d._get_default_group()._get_backend(torch.device('cpu')).options._timeout.total_seconds())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == expected
    if expected == "1800.0":
        assert "medsft: this torch cannot change the process group's timeout: ddp_timeout 66 not applied" in proc.stderr
