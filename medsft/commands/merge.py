"""`python -m medsft merge RUN_DIR OUT_DIR`: the adapter folded into the base weights."""

from __future__ import annotations

from medsft.errors import UserError


def main(argv: list[str]) -> int:
    """`merge RUN_DIR OUT_DIR`: the adapter folded into the base weights, saved as a plain model + tokenizer."""
    import tempfile
    from pathlib import Path

    from medsft.console.quiet import quiet_libraries
    from medsft.models import inference
    from medsft.runs import run_folder, run_state

    from medsft.commands.common import checked_dtype, pop_option

    trust = "--trust_remote_code" in argv
    argv = [a for a in argv if a != "--trust_remote_code"]
    dtype, argv = pop_option(argv, "--dtype")
    device_map, argv = pop_option(argv, "--device_map")
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise UserError("usage: python -m medsft merge RUN_DIR OUT_DIR [--dtype D] [--device_map M] [--trust_remote_code]")
    run, out = Path(argv[0]), Path(argv[1])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"OUT_DIR {out} is not empty; merge writes into a new or empty folder and overwrites nothing")
    run_state.require_finished(run)
    if not run_folder.holds_adapter(run):
        raise UserError(f"{run} holds no LoRA adapter ({run_folder.ADAPTER_CONFIG}): nothing to merge")
    quiet_libraries()
    loaded = inference.load(str(run), trust, dequantize=True, dtype=checked_dtype(dtype), device_map=device_map)
    model = loaded.model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    loaded.tokenizer.save_pretrained(tmp)
    if out.exists():
        out.rmdir()  # empty, checked above
    tmp.rename(out)  # all or nothing: an interrupted merge leaves no half-written OUT_DIR
    print(f"merged {run} into {out}: loads with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0
