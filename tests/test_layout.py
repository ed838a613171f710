"""The layout a newcomer walks: one folder per stage, imports that run one way down the stages, names that say what
a module is (none shared), and functions short enough to read."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "medsft"
# Top to bottom: a module may import its own stage or a lower one, never a higher one.
STAGES = ["__main__", "commands", "console", "serving", "training", "export", "evaluation", "generation", "models", "runs", "data",
          "deid", "recipe", "tasks", "base"]
BASE = {"__init__", "errors", "textfiles"}  # medsft's own top-level modules, below every stage


def stage(module: str) -> str:
    """The stage of a dotted module name inside medsft (medsft.data.encoding -> data)."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in BASE:
        return "base"
    return parts[0]


def modules() -> dict[str, Path]:
    """dotted name -> file, a package named by its folder (medsft.data -> medsft/data/__init__.py)."""
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported medsft module) for every import in the file, inside functions too."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("medsft")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("medsft"):
                found += [(node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base) for a in node.names]
    return found


def test_the_package_is_one_folder_per_stage():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py", "textfiles.py"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(s for s in STAGES if s not in ("__main__", "base"))
    assert all((PACKAGE / f / "__init__.py").is_file() for f in folders)


def test_imports_run_one_way_down_the_stages():
    upward = []
    for module, path in modules().items():
        here = "__main__" if module == "medsft.__main__" else stage(module)
        for line, target in imports(path, module):
            if STAGES.index(stage(target)) < STAGES.index(here):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({stage(target)})")
    assert upward == []


def test_the_check_sees_an_import_that_runs_up(tmp_path):
    """The checker itself: a data module importing the trainer is caught."""
    bad = tmp_path / "encoding.py"
    bad.write_text("from medsft.training.trainer import MedsftTrainer\n\ndef f():\n    from medsft import commands\n")
    found = imports(bad, "medsft.data.encoding")
    assert [stage(t) for _, t in found] == ["training", "commands"]
    assert all(STAGES.index(stage(t)) < STAGES.index("data") for _, t in found)


def test_no_two_modules_share_a_name():
    names = [p.stem for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_no_function_is_longer_than_eighty_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def run_file_names() -> set[str]:
    from medsft.runs import provenance, records, run_folder, run_state

    names = {v for m in (provenance, records, run_folder, run_state) for k, v in vars(m).items()
             if k.isupper() and isinstance(v, str) and "." in v}
    return names | {"tokenizer_config.json", "confusion_matrix.png"}


def spelled_run_files(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) where the source spells a run folder's file name: a string that is one, or a piece of an
    f-string that holds one (a printed message)."""
    import re

    inside = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")(?![\w])")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    found += [(node.lineno, m.group(1)) for m in inside.finditer(part.value)]
    return found


def test_only_the_runs_stage_names_a_run_folders_files():
    """Writing a run folder, its state, provenance and records, and reading them back, live in medsft/runs/: no other
    module, and no benchmark, spells one of its file names (printed ones included)."""
    names = run_file_names()
    assert {"recipe.yaml", "split_ids.json", "eval_results.json", "cv_results.json", "trainer_state.json",
            "adapter_config.json", "config.json"} <= names
    files = [path for module, path in modules().items() if stage(module) != "runs"] + sorted((ROOT / "bench").glob("*.py"))
    spelled = [f"{path.relative_to(ROOT)}:{line} {name}" for path in files
               for line, name in spelled_run_files(path.read_text(), names)]
    assert spelled == []


def test_the_run_file_check_reads_f_strings():
    source = 'a = "eval_results.json"\nprint(f"written to {out}: eval_results.json, x")\nb = "eval_results.jsonl"\n'
    assert spelled_run_files(source, run_file_names()) == [(1, "eval_results.json"), (2, "eval_results.json")]


def test_no_package_file_is_ignored_by_git():
    # A clean clone has only what git tracks: an ignore rule that catches a package
    # folder (`runs/` once hid medsft/runs/) breaks every import there and nowhere here.
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(ROOT)) for p in (ROOT / "medsft").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == []


def import_graph() -> dict[str, set[str]]:
    """medsft's modules and the medsft modules each imports (inside functions too), from the source."""
    known = modules()
    return {module: {target for _, target in imports(path, module) if target in known and target != module}
            for module, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other round in a loop (Tarjan's strongly connected components)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_in_a_circle():
    assert circles(import_graph()) == []


def test_the_circle_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


# A trainer is one unit, as a task is: its module in training/ and its recipe keys; nothing else compares its name.
TRAINER_FILES = {"medsft/training/sft.py", "medsft/training/grpo.py", "medsft/training/dpo.py", "medsft/training/kto.py",
                 "medsft/training/orpo.py", "medsft/recipe/trainer_keys.py", "medsft/recipe/preference_keys.py",
                 "medsft/recipe/grpo_keys.py"}


def trainer_name_branches(source: str) -> list[int]:
    """Lines of `source` that branch on a trainer's name: a comparison (==, !=, in, a match case) with a trainer's
    name, or of something called `trainer` with a string; a table keyed by trainers' names."""
    from medsft.recipe.trainer_keys import NAMES

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            strings = {e.value for o in operands for e in (o.elts if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o])
                       if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            named = any(isinstance(o, ast.Attribute) and o.attr == "trainer" or isinstance(o, ast.Name) and o.id == "trainer"
                        for o in operands)
            if strings & set(NAMES) or (named and strings):
                found.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) and node.value.value in NAMES:
            found.append(node.lineno)
        elif isinstance(node, ast.Dict) and {k.value for k in node.keys if isinstance(k, ast.Constant)} & set(NAMES):
            found.append(node.lineno)
    return found


def test_nothing_outside_a_trainers_module_branches_on_its_name():
    branches = [f"{path.relative_to(ROOT)}:{line}" for path in PACKAGE.rglob("*.py")
                if str(path.relative_to(ROOT)) not in TRAINER_FILES for line in trainer_name_branches(path.read_text())]
    assert branches == []


def test_the_trainer_check_sees_a_branch():
    source = ('if recipe.script.trainer == "grpo":\n    pass\nif name in ("sft", "x"):\n    pass\n'
              'configs = {"sft": 1}\nif trainer != "dpo_like":\n    pass\nok = mode == "generate"\n')
    assert trainer_name_branches(source) == [1, 3, 5, 6]


def test_every_module_is_named_in_the_layout_page():
    import re

    page = (ROOT / "docs" / "layout.md").read_text()
    unnamed = [str(p.relative_to(ROOT)) for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"
               and not re.search(rf"(?<![\w]){re.escape(p.stem)}(?![\w])", page)]
    assert unnamed == []
