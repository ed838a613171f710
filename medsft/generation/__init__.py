"""Generation that evaluation and serving share: the tokens that end a reply, sampling one completion, and text
decoded incrementally."""
