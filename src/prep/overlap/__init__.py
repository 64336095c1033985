"""What rows share with each other and with benchmarks: the text compared (`text`), exact keys and
MinHash LSH near-duplicates (`near`), benchmark n-grams (`ngrams`). Used by dedup, split,
decontaminate and validate's near-duplicate check, so they all agree on what a duplicate is."""
