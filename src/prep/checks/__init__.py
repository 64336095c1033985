"""What `prep validate` checks, as a library: codes (every finding code), schemas (JSON Schemas of
the formats), filechecks (bytes), filecheck (every check on one file's rows), rules/ (conversation,
text, content, quality), locate (where a record's parts are in the raw row), stats, tokens."""
