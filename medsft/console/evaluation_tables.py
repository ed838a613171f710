"""Evaluation results rendered: the run header, one table per dataset (choices with intervals and paired tests, or
perplexity), the summary, the sample panels, the cross-validation table. Results in, rich output out; nothing here
computes a metric."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from medsft.console import contamination_report
from medsft.console import deid_report
from medsft.evaluation import protocol


def _delta(tuned: float, base: float, p: float | None = None, scale: float = 100.0) -> str:
    """The difference, green or red only when significant at 0.05 (a p-value beside it), dim otherwise."""
    d = (tuned - base) * scale
    if p is None:
        return f"{d:+.1f}"
    colour = ("green" if d > 0 else "red") if p < 0.05 else "dim"
    return f"[{colour}]{d:+.1f}{'*' if p < 0.05 else ''} (p {p:.2g})[/]"


def with_ci(value: float, ci: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    text = f"{value * scale:.{digits}f}"
    return text + (f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else "")


def header(console: Console, run: dict, evaluated: str) -> None:
    """What produced these numbers: recipe, model, data, steps, time."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("recipe", str(run.get("recipe", "-")))
    grid.add_row("model", str(run.get("model", "-")) + (" + LoRA" if run.get("adapter") else ""))
    for name, sizes in run.get("datasets", {}).items():
        grid.add_row("data", f"{name}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    grid.add_row("evaluated", evaluated)
    if run.get("steps") is not None:
        grid.add_row("steps", str(run["steps"]))
    if run.get("train_seconds") is not None:
        minutes, seconds = divmod(run["train_seconds"], 60)
        grid.add_row("training time", f"{int(minutes)} min {seconds:.0f} s")
    console.print(Panel(grid, title="medsft report", expand=False))


def short(text: str, lines: int = 4, chars: int = 320) -> str:
    """A sample as a reader wants it: a repeated line shown once (then "…"), at most `lines` lines and `chars`."""
    kept: list[str] = []
    for line in text.strip().splitlines():
        if kept and line.strip() == kept[-1].strip():
            if kept[-1] != "…":
                kept.append("…")
            continue
        if kept and kept[-1] == "…" and len(kept) > 1 and line.strip() == kept[-2].strip():
            continue
        kept.append(line)
    cut = len(kept) > lines
    out = "\n".join(kept[:lines])
    if len(out) > chars:
        out, cut = out[:chars].rstrip(), True
    return out + (" …" if cut and not out.endswith("…") else "")


def samples(console: Console, items: list[dict]) -> None:
    """One panel per prompt: its end, then reference (when known), base and tuned continuations side by side."""
    for item in items:
        names = [k for k in ("gold", "base", "tuned") if k in item]
        table = Table(expand=True, box=None)
        for name in names:
            table.add_column("reference" if name == "gold" else name, ratio=1, style="dim" if name == "gold" else None)
        table.add_row(*(Text(short(item[name])) for name in names))
        prompt = " ".join(item["prompt"].split())
        shown = prompt if len(prompt) <= 200 else "..." + prompt[-200:]
        console.print(Panel(Group(Text(shown, style="italic"), table), title="sample generation", expand=True))


def _choice_table(console: Console, evaluation: dict) -> None:
    models, labels = evaluation["models"], evaluation["labels"]
    majority, tests = evaluation.get("majority_baseline"), evaluation.get("tests", {})
    title = f"{evaluation['name']}: {evaluation['task']} on {evaluation['n']} test items"
    if evaluation.get("scoring") == "generate":
        title += ", generated answers"
    table = Table(title=title, min_width=len(title))
    table.add_column("metric (95% interval)")
    for name in models:
        table.add_column(name, justify="right")
    both = {"base", "tuned"} <= set(models)
    if both:
        table.add_column("tuned - base", justify="right")
    staged = {"start", "tuned"} <= set(models)  # a stage: also against the run it started from
    if staged:
        table.add_column("tuned - start", justify="right")
    if majority:
        table.add_column(f"majority ({majority['label']})", justify="right")
        table.add_column(f"{'tuned' if 'tuned' in models else 'base'} - majority", justify="right")
    final = "tuned" if "tuned" in models else "base"

    def row(label: str, value, ci=lambda m: None, p_key: str | None = None, style=None, test_key="tuned_vs_base",
            baseline: bool = True) -> None:
        cells = [with_ci(value(m), ci(m)) for m in models.values()]
        if both:
            test = tests.get(test_key, {})
            cells.append(_delta(value(models["tuned"]), value(models["base"]), test.get(p_key) if p_key else None))
        if staged:
            test = tests.get(test_key.replace("_base", "_start"), {})
            cells.append(_delta(value(models["tuned"]), value(models["start"]), test.get(p_key) if p_key else None))
        if majority and baseline:
            test = tests.get(f"{final}_vs_majority", {})
            cells += [with_ci(value(majority), ci(majority)), _delta(value(models[final]), value(majority), test.get(p_key) if p_key else None)]
        elif majority:
            cells += ["", ""]
        table.add_row(label, *cells, style=style)

    generated = evaluation.get("scoring") == "generate"
    row("accuracy %" + (" (strict)" if generated else ""), lambda m: m["accuracy"], lambda m: m.get("ci", {}).get("accuracy"), "p_value")
    if generated:  # the answer read leniently, the replies that name no option, the majority of several replies
        extra = [key for key in models[final] if key.startswith("accuracy_maj@")]
        row("accuracy % (lenient)", lambda m: m["accuracy_lenient"], lambda m: m.get("ci", {}).get("accuracy_lenient"),
            "p_value", test_key="tuned_vs_base_lenient", baseline=False)
        row("unparseable %", lambda m: m["unparseable"], lambda m: m.get("ci", {}).get("unparseable"), baseline=False)
        for key in extra:
            row(f"accuracy % ({key.split('_', 1)[1]})", lambda m, k=key: m[k], lambda m, k=key: m.get("ci", {}).get(k),
                baseline=False)
    row("macro-F1 %", lambda m: m["macro_f1"], lambda m: m.get("ci", {}).get("macro_f1"), "macro_f1_p_value")
    calibrations = {name: m["calibration"] for name, m in models.items() if "calibration" in m}
    if len(calibrations) == len(models):
        for key, label in (("accuracy", "accuracy % (argmax)"), ("macro_f1", "macro-F1 % (argmax)")):
            cells = [with_ci(c["argmax"][key], None) for c in calibrations.values()]
            table.add_row(label, *cells, *([""] * (len(table.columns) - 1 - len(cells))), style="dim")
        first = next(iter(calibrations.values()))
        table.caption = "decision offsets {}: {}".format(
            f"fitted on {first['dev_items']} dev items" if "dev_items" in first else f"from {first['source']}",
            "; ".join(name + " " + " ".join(f"{c} {o:+.1f}" for c, o in list(r["offsets"].items())[1:])
                      for name, r in calibrations.items()),
        )
    for cls in labels:
        row(f"F1 {cls} (n={models[final]['per_class'][cls]['support']})", lambda m, c=cls: m["per_class"][c]["f1"],
            lambda m, c=cls: m.get("ci", {}).get("per_class_f1", {}).get(c))
    console.print(table)
    if generated:
        console.print("[dim]strict: the reply states one option; lenient: the first option it names; unparseable: it "
                      "names none (counted wrong, never mapped to an option)[/]")
    console.print("[dim]* significant at 0.05: accuracy by exact McNemar on the items one model gets right and the other "
                  "wrong, macro-F1 by a paired bootstrap over items[/]")
    title = f"confusion matrix ({final}): rows gold, columns predicted"
    matrix = Table(title=title, min_width=len(title))
    matrix.add_column("gold \\ predicted")
    for cls in labels:
        matrix.add_column(cls, justify="right")
    for cls, counts in zip(labels, models[final]["confusion_matrix"]):
        matrix.add_row(cls, *map(str, counts))
    console.print(matrix)


def _perplexity_table(console: Console, evaluation: dict) -> None:
    title = f"{evaluation['name']}: {evaluation['task']} on {evaluation['n']} test items"
    table = Table(title=title, min_width=len(title))
    table.add_column("model")
    table.add_column("perplexity (95% interval)", justify="right")
    pairs = all("preference_accuracy" in m for m in evaluation["models"].values())
    if pairs:  # held-out preference pairs: how often each model finds the chosen answer likelier, and by how much
        table.add_column("prefers chosen % (95% interval)", justify="right")
        table.add_column("margin, nats", justify="right")
    for name, m in evaluation["models"].items():
        ci = m.get("ci", {})
        cells = [with_ci(m["perplexity"], ci.get("perplexity"), scale=1.0, digits=2)]
        if pairs:
            cells += [with_ci(m["preference_accuracy"], ci.get("preference_accuracy")),
                      with_ci(m["preference_margin"], ci.get("preference_margin"), scale=1.0, digits=2)]
        table.add_row(name, *cells)
    captions = []
    for first in ("base", "start"):
        test = evaluation.get("tests", {}).get(f"tuned_vs_{first}")
        if test:
            low, high = test["perplexity_ratio_ci"]
            captions.append(f"tuned / {first} perplexity {test['perplexity_ratio']:.3f} [{low:.3f}, {high:.3f}], "
                            f"p {test['p_value']:.2g}")
        rewards = evaluation.get("tests", {}).get(f"tuned_vs_{first}_rewards")
        if rewards:
            low, high = rewards["reward_accuracy_ci"]
            captions.append(f"implicit reward against {first}: prefers chosen on {rewards['reward_accuracy'] * 100:.1f}% "
                            f"[{low * 100:.1f}, {high * 100:.1f}] of pairs, margin {rewards['reward_margin']:.2f} nats")
    table.caption = "; ".join(captions) or None
    console.print(table)


def summary(console: Console, evaluations: list[dict]) -> None:
    """One row per dataset: the headline metric of each model with its interval, and the paired difference."""
    names = [n for n in ("base", "tuned") if any(n in e["models"] for e in evaluations)]
    table = Table(title="summary: accuracy % (choice tasks) or perplexity, 95% intervals")
    for column in ("dataset", "task", "items", *names):
        table.add_column(column, justify="left" if column in ("dataset", "task") else "right")
    if len(names) == 2:
        table.add_column("tuned - base", justify="right")
    for e in evaluations:
        choice = "labels" in e
        key, scale, digits = ("accuracy", 100.0, 1) if choice else ("perplexity", 1.0, 2)
        cells = [with_ci(m[key], m.get("ci", {}).get(key), scale, digits) if m else "-"
                 for m in (e["models"].get(n) for n in names)]
        if len(names) == 2:
            test = e.get("tests", {}).get("tuned_vs_base")
            if test and choice:
                cells.append(_delta(e["models"]["tuned"][key], e["models"]["base"][key], test["p_value"]))
            elif test:
                cells.append(f"x{test['perplexity_ratio']:.3f} (p {test['p_value']:.2g})")
            else:
                cells.append("-")
        table.add_row(e["name"] + (" (generated)" if e.get("scoring") == "generate" else ""), e["task"], str(e["n"]), *cells)
    console.print(table)


def eval_report(console: Console, results: dict) -> None:
    """Header panel, then per dataset: the metrics table (base / tuned / delta / majority), per-class rows and the
    confusion matrix for choice tasks, perplexity otherwise, and the sample generations."""
    evaluations = results["evaluations"]
    header(console, results.get("run", {}), ", ".join(f"{e['name']} ({e['n']} test items)" for e in evaluations))
    deid_report.report(console, results.get("run", {}).get("deidentified"))
    for evaluation in evaluations:
        if "labels" in evaluation:
            _choice_table(console, evaluation)
        else:
            _perplexity_table(console, evaluation)
        if "protocol" in evaluation:
            console.print("[dim]protocol: " + protocol.short(evaluation["protocol"]) + "[/]")
        contamination_report.report(console, evaluation)
        samples(console, evaluation.get("samples", []))
    if len(evaluations) > 1:
        summary(console, evaluations)


def cv_report(console: Console, results: dict) -> None:
    """`medsft cv`: each fold's dev scores, their mean and spread, and the pooled out-of-fold numbers."""
    table = Table(title=f"cross-validation: {results['folds_used']} of {results['folds_available']} folds ({results['recipe']})")
    for column in ("fold", "dev items", "accuracy %", "macro-F1 %"):
        table.add_column(column, justify="right")
    for fold in results["folds"]:
        table.add_row(str(fold["fold"]), str(fold["items"]), f"{fold['accuracy'] * 100:.1f}", f"{fold['macro_f1'] * 100:.1f}")
    tuned = results["tuned"]
    table.add_row("mean ± sd", "", f"{tuned['accuracy']['mean'] * 100:.1f} ± {tuned['accuracy']['std'] * 100:.1f}",
                  f"{tuned['macro_f1']['mean'] * 100:.1f} ± {tuned['macro_f1']['std'] * 100:.1f}", style="bold")
    for name in ("tuned", "base"):
        pooled = results[name].get("pooled")
        if pooled and pooled["items"]:
            table.add_row(f"{name}, pooled argmax", str(pooled["items"]), with_ci(pooled["argmax"]["accuracy"], pooled["argmax_ci"]["accuracy"]),
                          with_ci(pooled["argmax"]["macro_f1"], pooled["argmax_ci"]["macro_f1"]), style="dim" if name == "base" else None)
            offsets = " ".join(f"{c} {o:+.1f}" for c, o in list(pooled["offsets"].items())[1:])
            table.add_row(f"{name}, offsets {offsets}", "", f"{pooled['with_offsets_in_sample']['accuracy'] * 100:.1f}",
                          f"{pooled['with_offsets_in_sample']['macro_f1'] * 100:.1f}", style="dim")
            crossed = pooled.get("with_offsets_cross_fitted")
            if crossed:
                table.add_row(f"{name}, offsets cross-fitted", str(pooled["items"]), with_ci(crossed["accuracy"], crossed["ci"]["accuracy"]),
                              with_ci(crossed["macro_f1"], crossed["ci"]["macro_f1"]), style="dim" if name == "base" else None)
    table.caption = ("offsets: fitted on all these out-of-fold items (in sample), and cross-fitted (each fold decided by "
                     "offsets fitted on the other folds); the test split is never used")
    console.print(table)


def left_out(console: Console, counts: dict[str, int]) -> None:
    """A suite's benchmarks less the items the run trained or tuned on: say how many, where any."""
    for name, n in counts.items():
        if n:
            console.print(f"[yellow]{name}: {n} items left out: the run trained or tuned on them")
