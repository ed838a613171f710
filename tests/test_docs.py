"""The README and docs/ are tested: every relative link (and its #anchor) leads somewhere, every recipes/... and
accelerate_configs/... path they name exists, and every `python -m medsft ...` line in them parses (the recipe and
its overrides resolve; nothing is trained or loaded)."""

import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NAMED_PATH = re.compile(r"(?<![\w/.])((?:recipes|accelerate_configs)/[\w./-]+\.(?:yaml|json))")
COMMAND = re.compile(r"(?:\./launch\.sh|accelerate launch|python -m medsft)\b[^`\n]*(?:\n(?!\s*\n)[^`\n]*)*")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*(\.[a-z]+)?$|[\[\]<>]|\.\.\.")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def commands(page: Path) -> list[list[str]]:
    """Each command line the page gives (in code blocks or inline code), as argv after `medsft` (the launcher's and
    accelerate's own arguments set aside); usage lines with placeholders (RECIPE, [--key value]) are left out."""
    text = page.read_text()
    spans = re.findall(r"`([^`]+)`", text) + [line.strip() for line in text.splitlines() if line.startswith("    ")]
    out = []
    for span in spans:
        span = re.sub(r"\s+#\s.*$", "", span, flags=re.M)  # a comment after the command
        for found in COMMAND.findall(" ".join(span.split())):
            for part in re.split(r"\s*(?:&&|;|\|)\s*", found):
                argv = shlex.split(part)
                if not argv or any(PLACEHOLDER.search(a) for a in argv):
                    continue
                if argv[0] == "./launch.sh":
                    argv = argv[2:] if len(argv) > 1 and not argv[1].endswith(".yaml") else argv[1:]
                elif "medsft" in argv and "-m" in argv:
                    argv = argv[argv.index("-m") + 2:]
                else:  # accelerate's own commands (accelerate config, ...)
                    continue
                if argv:
                    out.append(argv)
    return out


def parses(argv: list[str]) -> None:
    """Raise when the command line would not parse: the recipe and its keys, or the command's own options."""
    import torch

    from medsft.commands import generate, serve
    from medsft.commands.common import pop_int
    from medsft.recipe.parser import parse_recipe

    command = argv[0] if argv[0] in ("eval", "cv", "preview", "train", "generate", "serve", "merge", "compare", "export",
                                     "deid", "audit") else "train"
    args = argv[1:] if argv[0] == command else argv
    if command == "generate":
        positional = [a for a in args[:2] if not a.startswith("--")]
        generate.parser().parse_args_into_dataclasses(args[len(positional):])
    elif command == "serve":
        serve.parser().parse_args(args)
    elif command == "merge":
        assert len([a for a in args if a != "--trust_remote_code"]) == 2, argv
    elif command == "export":  # a run and a .gguf path, and only its own options
        from medsft.commands.export import _arguments

        _arguments([*args, "--force"])
    elif command == "deid":  # an input and an output, and only its own options
        from medsft.commands.deid import options

        options(args)
    elif command == "audit":  # a run folder, and only its own options
        from medsft.commands.audit import _arguments as audit_arguments

        audit_arguments(args)
    elif command == "compare":  # two folders or more, and only its own flags
        _, args = pop_int(args, "--seed", "seed")
        assert len([a for a in args if a != "--json"]) >= 2 and not [a for a in args if a.startswith("-") and a != "--json"], argv
    else:
        _, args = pop_int(args, "--folds", "folds")
        _, args = pop_int(args, "-n", "examples")
        recipe = args[0] if args and args[0].endswith(".yaml") else None
        cuda_only = recipe and any(k in (ROOT / recipe).read_text() for k in ("load_in_4bit: true", "use_vllm: true"))
        loading = command == "eval" or (cuda_only and not torch.cuda.is_available())  # QLoRA, vLLM: parsed all the same
        if recipe is None:  # a run folder: its options are recipe keys
            args = [str(ROOT / "recipes" / "quickstart.yaml"), *args[1:]]
        else:
            args = [str(ROOT / recipe), *args[1:]]
        parse_recipe(args, loading=bool(loading))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_named_path_exists(page):
    assert broken_links(page) == []
    missing = [p for p in NAMED_PATH.findall(page.read_text()) if not (ROOT / p).exists()]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_parses(page, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name paths relative to the repository root, as the docs run them
    for argv in commands(page):
        try:
            parses(argv)
        except SystemExit as e:
            pytest.fail(f"{page.name}: python -m medsft {shlex.join(argv)} exits {e.code}")
        except Exception as e:  # noqa: BLE001 - the line that does not parse is named
            pytest.fail(f"{page.name}: python -m medsft {shlex.join(argv)}: {e}")


def test_the_checks_see_a_broken_link_and_a_command_that_does_not_parse(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("[ok](there.md#a-heading) [gone](nowhere.md) [bad anchor](there.md#nope)\n\n"
                    "    python -m medsft recipes/quickstart.yaml --learning_rat 1e-4\n")
    assert broken_links(page) == ["page.md: nowhere.md (no such file)", "page.md: there.md#nope (no such heading)"]
    [argv] = commands(page)
    from medsft.errors import UserError

    with pytest.raises(UserError, match="unknown option '--learning_rat'; did you mean '--learning_rate'"):
        parses(argv)


def test_the_pages_hold_many_commands():
    """The extraction finds the command lines (a regex that found none would pass everything)."""
    found = {page.name: len(commands(page)) for page in PAGES}
    assert found["README.md"] >= 10 and sum(found.values()) >= 30, found
