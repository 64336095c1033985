"""The vocabulary every layer speaks: findings and tallies, the finding codes (severity and hint of
each), canonical records, the shard columns, the options table of every verb, the verb result and
progress shapes, exact sampling plans, and the optional extras.
Nothing here reads or writes a file; everything above imports from here."""
