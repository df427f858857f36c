"""The toy world: generator, tokenizer, training, evaluation, exact first-wrong-token location, judge head."""
