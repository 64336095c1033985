"""The data verbs, as wiring: each reads its inputs, runs the library code of the layers below over
batches, and writes its outputs: convert, validate (+ validate_report: its table and JSON), template,
tokenize, pack, stats, inspect, export, mix, dedup, split, decontaminate (+ record_writer: the kept rows
and the rejects of the four verbs that drop rows), report (+ report_html: the page and its charts), and
engine (where batches run: here, or on Ray Data)."""
