"""`python -m medsft preview`: the data as training sees it; nothing trained, nothing written."""

import json

from conftest import run_cli


def test_preview_counts_and_writes_nothing(write_recipe, tmp_path):
    rows = []
    for i in range(6):
        rows.append({"pubid": str(i), "question": f"Is finding {i} abnormal?", "context": {"contexts": [f"Finding {i} was seen."]},
                     "long_answer": "It was.", "final_decision": ["yes", "no", "maybe"][i % 3]})
    rows[1]["context"]["contexts"] = ["Heart rate was high. " * 80]  # over-long: the context gets shortened
    rows[2]["long_answer"] = "Very long conclusion. " * 120  # the answer alone cannot fit: dropped
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the official-split format beside the file: rows 0-3 train (fold 1 holds them), 4 dev (fold 0), 5 test
    (tmp_path / "splits.json").write_text(json.dumps({"test": ["5"], "folds": [["4"], ["0", "1", "2", "3"]] + [[]] * 8}))
    recipe = write_recipe(dataset_name=str(data), max_length=128, include_long_answer=True, per_device_train_batch_size=2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = run_cli("preview", recipe, "-n", "2")
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "training example 1:" in out and "training example 2:" in out and "training example 3:" not in out
    assert "rows 3 of 4 kept" in out
    assert "truncated 1 (context shortened" in out
    assert "dropped 1 (the answer or the question cannot fit max_length)" in out
    assert "every label masked 0" in out
    assert "per epoch 2 steps" in out  # 3 rows, batch 2
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert not (tmp_path / "out").exists()


def _loaded_after(*args) -> tuple[str, set[str]]:
    """(stdout, which of peft, deepspeed, TRL's configs (transformers' TrainingArguments beneath them) and TRL's
    trainers the command imported), as a user runs it."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    script = ("import runpy, sys\nsys.argv = ['medsft', *sys.argv[1:]]\ntry:\n    runpy.run_module('medsft', run_name='__main__')\n"
              "except SystemExit as e:\n    assert not e.code, e.code\n"
              "watched = ('torch', 'peft', 'deepspeed', 'trl.trainer.base_config', 'trl.trainer.sft_trainer',"
              " 'trl.trainer.grpo_trainer')\n"
              "print('LOADED', *[m for m in watched if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *shown, last = proc.stdout.strip().splitlines()
    return "\n".join(shown), set(last.split()[1:])


def test_help_and_a_second_preview_import_no_trainer_deepspeed_or_peft(write_recipe):
    """--help lists TRL's config keys without peft (transformers would import it beneath them) or any trainer; a
    preview of a recipe previewed before reads its parse back (data/recipe_cache.py) and its prepared data: no TRL
    config class (nor transformers' TrainingArguments), no DeepSpeed or peft; and it shows what the first one showed."""
    out, loaded = _loaded_after("--help")
    assert "num_train_epochs" in out and loaded.isdisjoint({"peft", "deepspeed", "trl.trainer.sft_trainer",
                                                              "trl.trainer.grpo_trainer"}), loaded
    recipe = write_recipe(max_length=200)
    first, loaded_first = _loaded_after("preview", recipe, "-n", "2")
    assert "trl.trainer.base_config" in loaded_first  # the first parse checks every key against TRL's classes
    second, loaded_second = _loaded_after("preview", recipe, "-n", "2")
    assert loaded_second == set(), loaded_second
    assert second == first
    path = recipe.read_text().replace("max_length: 200", "max_length: 64")
    recipe.write_text(path)
    third, loaded_third = _loaded_after("preview", recipe, "-n", "2")
    assert "trl.trainer.base_config" in loaded_third and third != first  # a changed recipe is parsed again
