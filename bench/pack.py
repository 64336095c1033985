"""Bench `prep pack`: packing efficiency (tokens / (rows x max-len)) and seconds, beside TRL's own
`trl.data_utils.pack_dataset` (strategy "bfd") on exactly the same lengths.

    python bench/pack.py [--copies 20] [--repeat 3] [--synthetic 1000000] [--skip-trl-synthetic]

Data: the fixtures' alpaca (LLaMA-Factory demo) x`--copies`, converted to conversations and
tokenized by prep's Python API (qwen2.5 tokenizer, chatml, no length cap) into unpacked shards.
Then, for max-len 2048 and 4096:

- `prep pack` through its Python API: reads the unpacked shards, packs (bfd, default window of
  100k documents), writes zstd Parquet shards with their sha256 and the manifest;
- prep's `best_fit_decreasing` alone on the lengths (the algorithm without any I/O);
- TRL's `pack_dataset(dataset, max_len, "bfd")` called as SFTTrainer calls it (a batched
  `datasets.map`, 1,000 rows per batch, so it packs each 1,000 rows apart), and the same with
  `batch_size=None` (the whole set at once, its best efficiency). Its dataset holds the same
  `input_ids` (built beforehand, not timed); it stays in memory and writes nothing.

Last, seconds to pack `--synthetic` lengths into rows of 4096, drawn with a fixed seed from the
alpaca lengths (a few hundred distinct values) and from a long-tailed lognormal (thousands): prep's
best_fit_decreasing over the whole set and over windows of 100k (prep pack's default), and TRL's
`_pack_bfd` (what pack_dataset maps) over the whole set and pack_dataset batched as SFTTrainer runs it. TRL gets list columns with null values of those
lengths, so no token memory is needed: only its lengths matter to it.

Runs are repeated (--repeat) with the tools interleaved; best and median seconds are reported.
Everything is written to a temporary folder; nothing lands in the repository.
"""

from __future__ import annotations

import os
import sys

# Python puts bench/ first on sys.path, so a script here named like a module something imports would
# stand in for it: take bench/ off before anything else loads (as bench/validate.py does).
# ruff: noqa: E402 - the imports below must come after this
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse
import runpy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from trl.data_utils import _pack_bfd, pack_dataset  # _pack_bfd: what pack_dataset maps over each batch

_speed = runpy.run_path(str(Path(__file__).resolve().parent / "tokenize_speed.py"))  # alpaca -> conversations
ALPACA, TOKENIZER, make_data, timed = _speed["ALPACA"], _speed["TOKENIZER"], _speed["make_data"], _speed["timed"]
LENGTHS = (2048, 4096)
SYNTHETIC_LEN = 4096
SYNTHETIC_WINDOW = 100_000


def efficiency(tokens: int, rows: int, max_len: int) -> float:
    return tokens / (rows * max_len)


def unpacked(work: Path, copies: int) -> Path:
    """Alpaca x`copies` tokenized by prep into unpacked shards (every row kept: no length cap)."""
    from prep.formats.inputs import Inputs
    from prep.stages.tokenize import tokenize

    data = make_data(work, copies)
    result = tokenize(Inputs([str(data)]), str(TOKENIZER), str(work / "unpacked"), template="chatml")
    assert result.tally.rejected_total == 0, result.tally.summary()
    return work / "unpacked"


def null_lists(lengths: np.ndarray) -> pa.Table:
    """An `input_ids` column of lists with these lengths whose values are nulls (no memory for tokens)."""
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    return pa.table({"input_ids": pa.LargeListArray.from_arrays(offsets, pa.nulls(int(offsets[-1]), pa.int32()))})


def trl_rows(dataset: Any, max_len: int, batch_size: int | None = 1000) -> tuple[int, int]:
    """(rows, tokens) after TRL's pack_dataset with bfd; `batch_size` as datasets.map takes it."""
    packed = pack_dataset(dataset, max_len, "bfd", map_kwargs={"batch_size": batch_size})
    table = packed.with_format("arrow")[:]
    return table.num_rows, int(pc.sum(pc.list_value_length(table["input_ids"])).as_py())


class Results:
    """Seconds per (name, max_len) over the rounds, with rows and tokens of the output (equal every round)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, int], list[float]] = {}
        self.output: dict[tuple[str, int], tuple[int, int]] = {}

    def run(self, name: str, max_len: int, fn: Any) -> None:
        seconds, (rows, tokens) = timed(fn)
        key = (name, max_len)
        self.seconds.setdefault(key, []).append(seconds)
        assert self.output.setdefault(key, (rows, tokens)) == (rows, tokens), (key, rows, tokens)
        print(f"  {name}, {max_len}: {seconds:.2f}s", flush=True)

    def table(self, title: str, reference: str) -> None:
        """Seconds and efficiency per row; `speed-up` is the reference's best seconds over this row's."""
        print(f"\n{title}; speed-up: best seconds of {reference!r} / best seconds of the row")
        print(f"{'':44} {'max-len':>7} {'rows':>9} {'efficiency':>10} {'best s':>8} {'median':>8} {'speed-up':>9}")
        for (name, max_len), times in self.seconds.items():
            rows, tokens = self.output[(name, max_len)]
            ref = self.seconds.get((reference, max_len))
            ratio = f"{min(ref) / min(times):9.1f}" if ref else ""
            print(f"{name:44} {max_len:>7} {rows:>9,} {efficiency(tokens, rows, max_len):>10.4%} {min(times):>8.2f} "
                  f"{statistics.median(times):>8.2f} {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=1_000_000)
    parser.add_argument("--skip-trl-synthetic", action="store_true", help="do not run TRL on the synthetic lengths")
    args = parser.parse_args()
    if not ALPACA.exists() or not TOKENIZER.exists():
        sys.exit(f"fixtures not found under {ALPACA.parents[2]} (set PREP_FIXTURES)")

    import datasets
    from datasets.utils.logging import disable_progress_bar

    from prep.shards.packing import best_fit_decreasing
    from prep.shards.reader import iter_tables
    from prep.stages.pack import pack

    disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="prep-bench-pack-"))
    seconds, indir = timed(lambda: unpacked(work, args.copies))
    input_ids = pa.concat_tables(iter_tables(indir, ["input_ids"]))["input_ids"].combine_chunks()
    lengths = pc.list_value_length(input_ids).to_numpy().astype(np.int64)
    total = int(lengths.sum())
    print(f"data: alpaca x{args.copies}: {len(lengths):,} conversations, {total:,} tokens (qwen2.5, chatml; "
          f"length min {lengths.min()}, median {int(np.median(lengths))}, max {lengths.max()}), tokenized by prep "
          f"in {seconds:.1f}s; {os.cpu_count()} CPUs", flush=True)
    assert lengths.max() <= min(LENGTHS), "a conversation is longer than a row: TRL would truncate it, prep drop it"
    trl_data = datasets.Dataset(pa.table({"input_ids": input_ids}))

    def prep_pack(max_len: int) -> tuple[int, int]:
        # a fresh folder each round: pack reuses the shards of an earlier run with the same options
        m = pack(indir, tempfile.mkdtemp(dir=work, prefix=f"packed-{max_len}-"), max_len).manifest
        assert m["counts"]["written"] == len(lengths) and m["tokens"]["total"] == total, m["counts"]
        return m["counts"]["rows"], total

    def prep_bfd(max_len: int, window: int | None = None) -> tuple[int, int]:
        step = window or len(lengths)
        rows = sum(len(best_fit_decreasing(lengths[i:i + step], max_len)) for i in range(0, len(lengths), step))
        return rows, total

    alpaca = Results()
    for round_ in range(args.repeat):
        print(f"round {round_ + 1}", flush=True)
        for max_len in LENGTHS:
            alpaca.run("prep pack (API, shards written)", max_len, lambda n=max_len: prep_pack(n))
            alpaca.run("prep best_fit_decreasing (no I/O)", max_len, lambda n=max_len: prep_bfd(n))
            alpaca.run("TRL pack_dataset bfd (as SFTTrainer)", max_len, lambda n=max_len: trl_rows(trl_data, n))
            alpaca.run("TRL pack_dataset bfd, batch_size=None", max_len,
                       lambda n=max_len: trl_rows(trl_data, n, None))
    alpaca.table(f"alpaca x{args.copies} ({len(lengths):,} conversations, {total:,} tokens)",
                 "TRL pack_dataset bfd (as SFTTrainer)")

    rng = np.random.default_rng(0)
    sets = {"drawn from the alpaca lengths": rng.choice(lengths, size=args.synthetic, replace=True),
            "lognormal(6, 1) clipped to 1..4096 (long tail)":
                np.clip(rng.lognormal(6, 1, args.synthetic).astype(np.int64), 1, SYNTHETIC_LEN)}
    for title, synthetic in sets.items():
        synthetic_run(title, synthetic, args.skip_trl_synthetic)


def synthetic_run(title: str, synthetic: np.ndarray, skip_trl: bool) -> None:
    """prep's best_fit_decreasing (whole set and prep pack's default window) beside TRL's on these lengths."""
    import datasets

    from prep.shards.packing import best_fit_decreasing
    from prep.stages.pack import DEFAULT_WINDOW

    whole = int(synthetic.sum())
    print(f"\nsynthetic: {len(synthetic):,} lengths {title}, {whole:,} tokens, rows of {SYNTHETIC_LEN}", flush=True)
    big = Results()

    def bfd(window: int | None) -> tuple[int, int]:
        step = window or len(synthetic)
        return sum(len(best_fit_decreasing(synthetic[i:i + step], SYNTHETIC_LEN))
                   for i in range(0, len(synthetic), step)), whole

    big.run("prep best_fit_decreasing, whole set", SYNTHETIC_LEN, lambda: bfd(None))
    big.run(f"prep best_fit_decreasing, windows of {DEFAULT_WINDOW:,}", SYNTHETIC_LEN, lambda: bfd(DEFAULT_WINDOW))
    if skip_trl:
        print("  TRL on the synthetic lengths: skipped (--skip-trl-synthetic)")
    else:
        table = null_lists(synthetic)

        def trl_whole() -> tuple[int, int]:
            out = _pack_bfd(table, SYNTHETIC_LEN)
            return out.num_rows, int(pc.sum(pc.list_value_length(out["input_ids"])).as_py())

        big.run("TRL _pack_bfd, whole set", SYNTHETIC_LEN, trl_whole)
        big.run("TRL pack_dataset bfd (as SFTTrainer)", SYNTHETIC_LEN,
                lambda: trl_rows(datasets.Dataset(table), SYNTHETIC_LEN))
    big.table(f"{len(synthetic):,} synthetic lengths {title} (one run each)", "TRL _pack_bfd, whole set")


if __name__ == "__main__":
    main()
