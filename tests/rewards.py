"""A user's own GRPO reward, named by its dotted path in tests (rewards.reply_length)."""


def reply_length(completions, **_):
    """Longer replies earn more: a reward that differs between a prompt's replies on any model."""
    return [float(len(c if isinstance(c, str) else c[-1]["content"])) for c in completions]
