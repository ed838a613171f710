"""An Ollama Modelfile for an exported GGUF file: the run's chat template in Ollama's Go template form, its stops
(the end-of-turn token and the EOS) and the sampling defaults medsft's server uses.

Ollama does not run Jinja: it guesses a template from the GGUF's by likeness to the ones it knows, which a custom or
edited template does not survive. So the Jinja template is rendered on marked conversations and cut into its pieces
(the text before the first turn, with and without a system message; each role's text before and after its content;
the generation prompt), written as a Go template over Ollama's `.System` and `.Messages`; and kept only when it
renders further conversations (one to three exchanges, with and without a system message) exactly as the Jinja
template does. A template that is not made of such pieces (one that numbers turns, say) is left to Ollama's guess,
and said so. The BOS the template writes is left out where llama.cpp adds it itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medsft.data.spans import common_prefix
from medsft.data.templates import chat_text

U1, A1, U2, S = "\x02u1\x03", "\x02a1\x03", "\x02u2\x03", "\x02s\x03"
PROBES = [["What is the usual adult dose of amoxicillin?"],
          ["Is this note about asthma?", "No.", "What is it about, then?"],
          ["Patient: 64-year-old with chest pain.\nQuestion: next test?", "An ECG.", "And then?", "Troponin.", "Thanks."]]


@dataclass(frozen=True)
class Pieces:
    head: str  # before the first turn, without a system message
    system: tuple[str, str] | None  # (before, after) a system message's content, in head's place; None: no system turn
    user: tuple[str, str]
    assistant: tuple[str, str]  # the text after an assistant turn is left out after the last message (a prefill)
    generation: str

    def render(self, system: str | None, turns: list[str]) -> str:
        """The Go template's rendering, in Python: the check that it equals the Jinja template's."""
        out = f"{self.system[0]}{system}{self.system[1]}" if system and self.system else self.head
        for i, content in enumerate(turns):
            before, after = self.assistant if i % 2 else self.user
            out += before + content + ("" if i % 2 and i == len(turns) - 1 else after)
        return out + ("" if len(turns) % 2 == 0 else self.generation)

    def go(self) -> str:
        def role(name, before, after, last_too=True):
            close = after if last_too else f"{{{{ if not $last }}}}{after}{{{{ end }}}}"
            return f'{{{{ if eq .Role "{name}" }}}}{before}{{{{ .Content }}}}{close}{{{{ end }}}}'

        head = (f"{{{{ if .System }}}}{self.system[0]}{{{{ .System }}}}{self.system[1]}{{{{ else }}}}{self.head}{{{{ end }}}}"
                if self.system else self.head)
        return (head + "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
                + role("user", *self.user) + role("assistant", *self.assistant, last_too=False)
                + f'{{{{ if and $last (ne .Role "assistant") }}}}{self.generation}{{{{ end }}}}{{{{ end }}}}')


def _between(text: str, first: str, second: str) -> str:
    start = text.index(first) + len(first)
    return text[start: text.index(second, start)]


def _shared_prefix(a: str, b: str) -> str:
    return a[: common_prefix(a, b)]


def _conversation(turns, system: str | None = None) -> list[dict]:
    """Messages of alternating user and assistant `turns`, after a system message where one is given."""
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "assistant" if i % 2 else "user", "content": c} for i, c in enumerate(turns)]


def _pieces(tokenizer, bos: str | None) -> Pieces:
    """The template's pieces, from marked conversations that end in a user turn and the generation prompt (Phi-3's
    ends a conversation without one in an EOS); any cut of the text between two contents that renders both places
    it appears is the same template. ValueError where the template is not made of such pieces."""
    def render(*contents, system=None):
        return chat_text(tokenizer, _conversation(contents, system), True)

    one, three = render(U1), render(U1, A1, U2)
    closed = chat_text(tokenizer, _conversation([U1, A1]), False)
    after, tail = _between(three, U1, A1), three[three.index(U2) + len(U2):]
    after_user = _shared_prefix(after, tail)  # with the assistant's header where the generation prompt is the same
    assistant_before, generation = after[len(after_user):], tail[len(after_user):]
    head_user, between = one[: one.index(U1)], _between(three, A1, U2)
    closing = closed[closed.index(A1) + len(A1):]  # an assistant turn's end, as the template closes a conversation
    if closing and between.startswith(closing) and head_user.endswith(between[len(closing):]):
        user_before = between[len(closing):]
    else:
        user_before = _shared_prefix(head_user[::-1], between[::-1])[::-1]
    head, assistant_after = head_user[: len(head_user) - len(user_before)], between[: len(between) - len(user_before)]
    try:
        block = render(U1, system=S)
        block = block[: block.index(U1)]
        if not block.endswith(user_before):
            raise ValueError(block)
        block = block[: len(block) - len(user_before)]
        system = (block[: block.index(S)], block[block.index(S) + len(S):])
    except Exception:  # a template without a system turn of its own (Gemma's, Mistral's): Ollama's system prompt is not written
        system = None
    if bos:  # llama.cpp puts BOS before the prompt itself
        head = head.removeprefix(bos)
        system = system and (system[0].removeprefix(bos), system[1])
    return Pieces(head, system, (user_before, after_user), (assistant_before, assistant_after), generation)


def go_template(tokenizer, adds_bos: bool) -> str | None:
    """The run's chat template as Ollama's Go template, or None where it cannot be written in that form."""
    bos = tokenizer.bos_token if adds_bos else None
    try:
        pieces = _pieces(tokenizer, bos)
    except Exception:
        return None
    for turns in PROBES:
        for system in ([None, "You are a careful clinical assistant."] if pieces.system else [None]):
            expected = chat_text(tokenizer, _conversation(turns, system), True)
            if bos and expected.startswith(bos):
                expected = expected[len(bos):]
            if pieces.render(system, turns) != expected:
                return None
    literal = [pieces.head, *(pieces.system or ()), *pieces.user, *pieces.assistant, pieces.generation]
    if any(mark in text for text in literal for mark in ("{{", "}}", '"""')):
        return None  # Go would read them as actions, or the Modelfile as the end of the template
    return pieces.go()


PLAIN = "{{ .Prompt }}"  # the prompt as the user wrote it: what a run trained on plain prompts reads


def modelfile(out: Path, tokenizer, end_of_turn: int | None, adds_bos: bool, plain: bool) -> tuple[Path, str]:
    """(the Modelfile written beside `out`, what its TEMPLATE is: "chat", "plain" or "none"). A run trained on plain
    prompts (`plain`) gets the prompt passed as written, never the tokenizer's chat template, which it did not train
    through; a chat run its template in Ollama's form, where that can be written."""
    stops = dict.fromkeys(tokenizer.convert_ids_to_tokens(i) for i in (end_of_turn, tokenizer.eos_token_id) if i is not None)
    if plain:
        template, form = PLAIN, "plain"
    else:
        template = go_template(tokenizer, adds_bos) if getattr(tokenizer, "chat_template", None) else None
        form = "chat" if template is not None else "none"
    lines = [f"FROM ./{out.name}"]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [*(f'PARAMETER stop "{s}"' for s in stops), "PARAMETER temperature 1.0", "PARAMETER top_p 1.0"]
    path = path_beside(out)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)
    return path, form


def path_beside(out: Path) -> Path:
    """Where the Modelfile of the GGUF file `out` goes."""
    return out.with_name("Modelfile")
