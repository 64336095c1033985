"""The data verbs, as wiring: each reads its inputs, runs the library code of the layers below over
batches, and writes its outputs: convert, validate, template, tokenize, pack, stats, inspect."""
