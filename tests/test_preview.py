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
