"""One options table per verb (prep.core.options): the CLI, the recipe schema and the Python API take the
same names, types, ranges, choices and defaults from it, and refuse a value with the same words."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import ROOT, SAMPLES
from prep.cli import main
from prep.core import options as opts
from prep.core.findings import PrepError
from prep.recipes.recipe import load_recipe

SCHEMA = json.loads((ROOT / "schemas" / "recipe.json").read_text(encoding="utf-8"))
_BOUNDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "not")


def _shape(schema: dict) -> dict:
    """The part of a property's schema an options table decides: type, range, choices (items for lists)."""
    out = {k: v for k, v in schema.items() if k in _BOUNDS}
    if "items" in schema:
        out["items"] = _shape(schema["items"])
    return out


@pytest.mark.parametrize("section", opts.RECIPE_SECTIONS)
def test_the_recipe_schema_has_each_table_option_with_its_type_range_and_choices(section: str) -> None:
    properties = SCHEMA["properties"][section]["properties"]
    table = {o.name: o for o in opts.TABLES[section] if o.recipe}
    assert set(properties) == set(table)
    for name, option in table.items():
        assert _shape(properties[name]) == option.schema(), f"{section}.{name}"


def _command(verb: str) -> click.Command:
    return main.commands["run" if verb == "run" else verb]


@pytest.mark.parametrize("verb", [v for v in opts.TABLES if v != "inputs"])
def test_the_cli_options_are_the_table(verb: str) -> None:
    params = {p.name: p for p in _command(verb).params if isinstance(p, click.Option)}
    table = {o.name: o for o in opts.TABLES[verb] if o.cli}
    if verb in ("convert", "validate", "template", "tokenize", "mix", "dedup", "split", "decontaminate"):
        table |= {o.name: o for o in opts.INPUTS if o.cli}
    assert set(params) == set(table)
    for name, option in table.items():
        param = params[name]
        assert param.required == option.required and param.multiple == option.multiple, name
        default = None if param.default is click.core.UNSET else param.default
        assert default == (() if option.multiple else option.default), name
        flags = option.flags or ("--" + name.replace("_", "-"),)
        assert param.opts + param.secondary_opts == [f for flag in flags for f in flag.split("/")], name
        if option.type in (int, float) or option.choices and not option.path:
            assert param.type.option is option, name  # checked by the table itself


def test_train_options_default_to_the_table() -> None:
    from prep.trainer.options import TrainOptions

    fields = {f.name: f.default for f in dataclasses.fields(TrainOptions) if f.name not in ("model", "output", "extra")}
    assert fields == {n: d for n, d in opts.defaults("train").items() if n in fields}
    assert set(fields) == {o.name for o in opts.TRAIN} - {"model", "output", "quiet"}


@pytest.mark.parametrize("verb,function", [
    ("convert", "prep.stages.convert:convert"), ("validate", "prep.stages.validate:validate"),
    ("template", "prep.stages.template:template"), ("tokenize", "prep.stages.tokenize:tokenize"),
    ("pack", "prep.stages.pack:pack"), ("inspect", "prep.stages.inspect:inspect"),
    ("report", "prep.stages.report:report"), ("export", "prep.stages.export:export"), ("mix", "prep.stages.mix:mix"),
    ("dedup", "prep.stages.dedup:dedup"), ("split", "prep.stages.split:split"),
    ("decontaminate", "prep.stages.decontaminate:decontaminate"),
])
def test_the_python_api_defaults_to_the_table(verb: str, function: str) -> None:
    module, name = function.split(":")
    signature = inspect.signature(getattr(__import__(module, fromlist=[name]), name))
    table = {o.name: () if o.multiple else o.default for o in opts.TABLES[verb]}
    # `prep template` without -o writes to stdout unless --show is given; template() writes to stdout
    cli_only = {("template", "output")}
    shared = [p for p in signature.parameters.values()
              if p.name in table and p.default is not p.empty and (verb, p.name) not in cli_only]
    assert shared
    for p in shared:
        assert p.default == table[p.name], f"{verb}: {p.name}"


def test_the_choice_lists_are_the_registries() -> None:
    from prep.formats import FORMATS, WRITABLE
    from prep.render.builtin import NAMES

    assert tuple(FORMATS) == opts.READABLE and WRITABLE == opts.WRITABLE
    assert NAMES == opts.TEMPLATES


def _recipe(tmp_path: Path, train: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(f"inputs: {{files: [{SAMPLES / 'openai.jsonl'}]}}\ntokenize: {{tokenizer: {SAMPLES / 'tokenizer'}}}\n"
                    f"train:\n  model: {SAMPLES / 'tokenizer'}\n  {train}\n", encoding="utf-8")
    return str(path)


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2
    return result.stderr.strip()


def test_lora_alpha_half_is_refused_with_the_same_words_everywhere(tmp_path: Path) -> None:
    from prep.trainer.train import TrainOptions, train

    words = "0.5: must be an integer of at least 1"
    with pytest.raises(PrepError) as recipe:
        load_recipe(_recipe(tmp_path, "lora_alpha: 0.5"))
    assert str(recipe.value) == f"{tmp_path / 'r.yaml'}:5: train.lora_alpha {words}"
    assert _cli("train", str(tmp_path), "--model", "m", "-o", "o", "--lora-alpha", "0.5") == f"prep: --lora-alpha {words}"
    with pytest.raises(PrepError) as api:
        train(str(tmp_path), TrainOptions(model="m", output="o", lora_alpha=0.5))
    assert str(api.value) == f"--lora-alpha {words}"


@pytest.mark.parametrize("option", [o for o in opts.TRAIN if o.recipe and (o.low is not None or o.choices)],
                         ids=lambda o: o.name)
def test_every_bounded_train_option_is_refused_alike_by_the_cli_and_a_recipe(tmp_path: Path, option: opts.Option) -> None:
    bad = "nope" if option.choices else (option.low - 1 if option.type is int else option.low - 0.5)
    problem = option.problem(bad)
    assert problem
    with pytest.raises(PrepError) as recipe:
        load_recipe(_recipe(tmp_path, f"{option.name}: {bad}"))
    assert str(recipe.value).endswith(f": train.{option.name} {problem}")
    assert _cli("train", str(tmp_path), "--model", "m", "-o", "o", option.flag, str(bad)) == f"prep: {option.flag} {problem}"
