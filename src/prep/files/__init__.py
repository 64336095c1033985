"""Files: reading rows in, writing rows and outputs out whole, and guarding what a run writes. One job per module
(import from the module itself):

- `paths`: what a path's name says (container, compression, stem, how it is shown)
- `streams`: files as byte streams and lines (.gz/.zst, stdin, BOMs, UTF-16, over-long lines)
- `jsondoc`: the strict JSON decoder, unpaired surrogates, `.json` documents read one value at a time
- `read`: `read_rows` over every container, `readable_file`
- `pieces`: `--engine ray` work planning (`Piece`, `pieces`, `joined`, `cut`) and `BATCH_ROWS`
- `write`: `RowWriter`, with CSV/Parquet spooling
- `atomic`: the one temporary-name scheme (`.NAME.tmp-PID-…`) and the one commit/abort protocol
  (`AllOrNothing`, `Staged`, `replaced`, `write_json`, `swap_in`, `sweep_temps`)
- `locks`: one writer per output (`locked`)
- `guard`: `check_outputs`, with the names the layers above write registered by them (`reserve`)
- `errors`: operating-system errors in one line (`os_error_message`)
- `hashing`: `sha256_file` and the cache between runs
"""
