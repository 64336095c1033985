"""Semantic rules in Python, by family: conversations (role order, tool calls, weights, preference
shape), text hygiene (Unicode oddities) and quality warnings (duplicates, casing, shared affixes).
They run on canonical records, and report at the raw row's paths through `validate.locate`."""
