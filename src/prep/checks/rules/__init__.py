"""Semantic rules in Python, by family: conversations (role order, tool calls, weights, preference
shape), content (legacy tool-call spellings), media (every image, video and audio opened and decoded; the
targets' rules), text hygiene (Unicode oddities) and quality warnings (duplicates, casing, shared affixes). They run on canonical records, and report at the raw
row's paths through `checks.locate`."""
