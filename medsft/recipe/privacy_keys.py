"""The recipe's privacy keys, checked before anything loads: `dp` (DP-SGD's budget and clipping) and `canaries` (the
secrets an audit measures), and the settings that cannot be made private with them, each refused in one line."""

from __future__ import annotations

import re
from typing import Any

from medsft.errors import UserError
from medsft.recipe import trainer_keys

DP_KEYS = ("epsilon", "delta", "max_grad_norm", "accountant")
# prv (Gopi et al. 2021) first, as Opacus's PrivacyEngine defaults: a tighter bound than rdp, so less noise for the
# same epsilon (8 at the quickstart's rate and steps: noise 0.46 against 0.51), and no warning that rdp's orders
# ran out.
ACCOUNTANTS = ("prv", "rdp")
CANARY_FORMAT = "The patient's medical record number is {secret}."
CANARY_REPEATS = [1, 4, 16]
SECRET = re.compile(r"\{secret(?::(\d+))?\}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def dp(value: Any) -> dict | None:
    """{epsilon, delta (None: 1 / (2 x rows), set once the rows are known), max_grad_norm, accountant}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"dp must be a mapping {{epsilon: E, delta: D, max_grad_norm: C}}, got {value!r}")
    unknown = sorted(set(value) - set(DP_KEYS))
    if unknown:
        raise UserError(f"dp: unknown key '{unknown[0]}'; it takes {', '.join(DP_KEYS)}")
    epsilon, delta = value.get("epsilon"), value.get("delta")
    clip, accountant = value.get("max_grad_norm", 1.0), value.get("accountant", "prv")
    if not _number(epsilon) or epsilon <= 0:
        raise UserError(f"dp: epsilon must be a number above 0 (the privacy budget; 8 is common), got {epsilon!r}")
    if delta is not None and (not _number(delta) or not 0 < delta < 1):
        raise UserError(f"dp: delta must be a number between 0 and 1 (below 1 / training rows), got {delta!r}")
    if not _number(clip) or clip <= 0:
        raise UserError(f"dp: max_grad_norm must be a number above 0 (each example's gradient is clipped to it), got {clip!r}")
    if accountant not in ACCOUNTANTS:
        raise UserError(f"dp: accountant {accountant!r} is not one of Opacus's {', '.join(ACCOUNTANTS)}")
    return {"epsilon": float(epsilon), "delta": None if delta is None else float(delta), "max_grad_norm": float(clip),
            "accountant": accountant}


def canaries(value: Any) -> dict | None:
    """{count, repeats, format, digits}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"canaries must be a mapping {{count: C, repeats: [1, 4, 16], format: \"...{{secret}}...\"}}, got {value!r}")
    unknown = sorted(set(value) - {"count", "repeats", "format", "digits"})  # digits: as a run's recipe.yaml keeps it
    if unknown:
        raise UserError(f"canaries: unknown key '{unknown[0]}'; it takes count, repeats and format")
    count, repeats, form = value.get("count", 1), value.get("repeats", CANARY_REPEATS), value.get("format", CANARY_FORMAT)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UserError(f"canaries: count must be a whole number of at least 1, got {count!r}")
    if not isinstance(repeats, list) or not repeats or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
                                                               for r in repeats):
        raise UserError(f"canaries: repeats must be a list of whole numbers of at least 1, got {repeats!r}")
    found = SECRET.findall(form) if isinstance(form, str) else []
    if len(found) != 1:
        raise UserError(f"canaries: format must hold {{secret}} (or {{secret:N}}, N digits) once, got {form!r}")
    digits = int(found[0] or 7)
    if not 4 <= digits <= 18:
        raise UserError(f"canaries: a secret of {digits} digits; give 4 to 18")
    return {"count": count, "repeats": repeats, "format": form, "digits": digits}


def refused(merged: dict[str, Any], given: list[str], script) -> None:
    """What cannot be made private, or audited with canaries, in one line each."""
    private = trainer_keys.get(script.trainer).private  # trains rows one by one: text rows too
    if script.canaries is not None and not private:
        raise UserError(f"canaries are trained as text rows, which trainer: {script.trainer} does not train (its rows are "
                        "pairs, completions to prefer or prompts to answer); use trainer: sft to plant them")
    if script.dp is None:
        return
    if not private:
        raise UserError(f"dp trains with trainer: sft only; trainer: {script.trainer}'s loss ties several rows (preference "
                        "pairs, a batch's KL partners, a prompt's group of replies), which per-example clipping does not "
                        "bound; remove dp or train with sft")
    if merged.get("packing"):
        raise UserError("dp cannot be used with packing: a packed row holds several examples, whose gradients would be "
                        "clipped together; remove packing")
    if merged.get("deepspeed") or merged.get("fsdp"):
        raise UserError(f"dp cannot be used with {'deepspeed' if merged.get('deepspeed') else 'fsdp'}: Opacus needs each "
                        "example's whole gradient in one process, which ZeRO and FSDP shard; remove it")
    if "max_grad_norm" in given:
        raise UserError("max_grad_norm clips the batch's gradient; with dp each example's is clipped by dp's "
                        "max_grad_norm: remove the top-level max_grad_norm")
