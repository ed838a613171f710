"""Completions of whole prompts (`generate`, the sample panels): each prompt a decoder job (decoder.py), the one
path the server's requests take too, so one prompt, seed and settings give one text from every command."""

from __future__ import annotations

from typing import Callable

from medsft.data import truncation
from medsft.generation.decoder import Decoder, Job

BATCH = 8  # prompts decoded together


def generate(model, tokenizer, prompts: list[str | list[int]], max_new_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, max_length: int | None = None, top_k: int = 0,
             on_text: Callable[[str], None] | None = None, **settings) -> list[str]:
    """One completion per prompt (text, or token ids such as a rendered chat), the new text only, stopping at any
    of `stop_ids`. temperature 0 is greedy; otherwise prompt i samples under seed + i (the server's `seed`), so the
    base and the tuned model draw with the same seeds whatever else ran before. top_k 0 keeps every token;
    `on_text` receives the text as it comes; `settings`: the rest of Job's (presence_penalty, ...)."""
    decoder = Decoder(model, tokenizer)
    jobs = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
        if max_length is not None:  # leave room for the answer, cut the prompt as training cuts it
            ids = truncation.fit_prompt(ids, 0, max(1, max_length - max_new_tokens), tokenizer.bos_token_id) or ids[-1:]
        events = (lambda text, done: on_text(text)) if on_text is not None else (lambda text, done: None)
        jobs.append(Job(ids or decoder.stops[:1], max_new_tokens, temperature, top_p, top_k, seed=seed + i,
                        on_event=events, **settings))  # an empty prompt starts after a document separator
    was_training = model.training
    model.eval()
    for start in range(0, len(jobs), BATCH):
        decoder.run(jobs[start : start + BATCH])
    model.train(was_training)
    return [job.text for job in jobs]
