"""What `medsft export` found, in a few lines: the file, its tokens against the run's, the next tokens and the test
items scored by both, the verdict with its reason, and what llama.cpp and Ollama need told."""

from __future__ import annotations

import json


def report(console, found: dict, check_file) -> None:
    console.print(f"wrote {found['file']} ({found['type']}, {found['bytes'] / 2**20:.1f} MiB) in {found['export_seconds']:.1f} s")
    t = found["tokens"]
    console.print(f"the file's tokenizer gives the run's tokens on {t['same'] * 100:.1f}% of {t['texts']} texts"
                  + ("" if t["same"] == 1.0 else f" (first differing text in {check_file.name})"))
    n = found.get("next_tokens")
    if n is not None:
        console.print(f"read back: largest next-token log-probability difference {n['max_logprob_difference']:.2g} over "
                      f"{n['positions']} positions, most likely token the same at {n['top1_agreement'] * 100:.1f}%")
    for name, v in found.get("items", {}).items():
        console.print(f"{name}: {v['n']} test items, run {v['run_accuracy'] * 100:.1f}%, exported "
                      f"{v['exported_accuracy'] * 100:.1f}%, same answer on {v['same_answer'] * 100:.1f}% (McNemar p "
                      f"{v['test']['p_value']:.2g})")
    same, why = found["verdict"]["same"], found["verdict"]["why"]
    head = {True: "the exported model gives the run's answers", False: "the exported model does NOT give the run's answers",
            None: "the exported model was not checked"}[same]
    console.print(f"{head}: {why}; details in {check_file}", highlight=False)
    if found.get("context_note"):
        console.print(found["context_note"])
    if found.get("chat_template_kwargs"):
        console.print("llama.cpp: the run renders its chat template with keywords; serve it with llama-server --jinja "
                      f"--chat-template-kwargs '{json.dumps(found['chat_template_kwargs'])}'", highlight=False)
    made = found.get("modelfile")
    if made:
        why = {"chat": "", "none": "; the chat template could not be written in Ollama's form: Ollama picks one by its likeness",
               "plain": ("; the run trained on plain prompts: its TEMPLATE passes a prompt as written ({{ .Prompt }}), "
                         "so give it prompts in the form the run trained on, not a chat")}[made["template"]]
        console.print(f"Ollama: {made['path']} (ollama create NAME -f Modelfile){why}", highlight=False)
