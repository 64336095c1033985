"""What `prep validate` checks, as a library: schemas (JSON Schemas of the formats), bytescan (a file's
bytes before it is parsed), filecheck (every check on one file's rows), rules/ (conversation, content,
text, quality), locate (where a record's parts are in the raw row), dataset_stats (the cookbook's
statistics), tokens (token statistics and checks with a tokenizer). The finding codes are core.codes."""
