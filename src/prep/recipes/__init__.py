"""`prep run`: recipe (loading and checking a YAML recipe) and runner (the stages in order, each
skipped when its content-addressed output is already there)."""
