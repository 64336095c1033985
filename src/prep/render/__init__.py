"""Rendering: records -> the exact text a model trains on, its loss spans, and token ids.

templates (the front door: a template by name), builtin (chatml, llama3, ...), jinja (the
tokenizer's own template), spans (what a render produces), tokenizer (loading a tokenizer and its
identity), encoder (records -> ids and labels as shard rows)."""
