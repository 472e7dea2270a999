"""Training recipes: SeqKD baseline and GAD."""
