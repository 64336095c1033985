"""The reward functions of `prep train --method grpo`, named with `--reward` (repeatable; their rewards add up):

- `exact[:COLUMN]`: 1 when the answer (the completion after its think block, stripped) is the row's COLUMN
  (default `answer`, carried into the prompt shards with `tokenize --keep-columns`), stripped; else 0;
- `math[:COLUMN]`: 1 when the answer's last `\\boxed{...}`, else its last number, equals COLUMN's value as a
  number (integers, decimals, `a/b`, `\\frac{a}{b}`, thousands separators and `$` ignored), or as text when
  either is not a number; else 0;
- `format[:REGEX]`: 1 when the whole completion (stripped) matches REGEX, by default a think block then an answer;
- `length[:N]`: 1 - |tokens - N| / N, at least 0: how near the completion's length is to N tokens (default:
  --max-completion-len);
- `FILE.py:FUNCTION`: a function of your own with TRL's reward signature, `f(prompts, completions,
  completion_ids, **kwargs) -> list[float | None]`; the kwargs hold each row's carried columns by name
  (`answer=[...]`, one value per completion), `prompt_input_ids`, and TRL's `trainer_state`.

A row whose COLUMN is empty gets None (TRL leaves it out of that function's mean), not a wrong 0. Nothing here
imports torch: the functions see the decoded completions TRL hands them.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from prep.core.findings import PrepError

Reward = Callable[..., list[float | None]]
BUILTIN = ("exact", "math", "format", "length")
THINK_FORMAT = r"<think>[\s\S]*?</think>\s*\S[\s\S]*"  # format's default: reasoning, then an answer
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")


def reward_functions(specs: tuple[str, ...] | list[str], carried: list[str], max_completion_len: int
                     ) -> list[Reward]:
    """The functions `specs` name, each checked now (a column the shards carry, a regex that compiles, a file
    that defines the function), so a misspelt reward stops the run before the model loads."""
    if not specs:
        raise PrepError("--method grpo needs at least one --reward: exact, math, format, length (each optionally "
                        ":ARGUMENT) or FILE.py:FUNCTION")
    return [_one(spec, carried, max_completion_len) for spec in specs]


def _one(spec: str, carried: list[str], max_completion_len: int) -> Reward:
    name, _, arg = spec.partition(":")
    if name.endswith(".py"):
        return _from_file(spec, Path(name), arg)
    if name not in BUILTIN:
        raise PrepError(f"--reward {spec}: not a reward; give one of {', '.join(BUILTIN)} (with an optional "
                        ":ARGUMENT) or FILE.py:FUNCTION")
    if name in ("exact", "math"):
        column = arg or "answer"
        if column not in carried:
            have = f"they carry {', '.join(carried)}" if carried else "they carry none"
            raise PrepError(f"--reward {spec}: the shards carry no column {column} ({have}); tokenize with "
                            f"--keep-columns {column}")
        return _named(_exact(column) if name == "exact" else _math(column), f"{name}_{column}")
    if name == "format":
        try:
            pattern = re.compile(arg or THINK_FORMAT)
        except re.error as e:
            raise PrepError(f"--reward {spec}: the regular expression does not compile ({e})") from None
        return _named(_format(pattern), "format")
    try:
        target = int(arg) if arg else max_completion_len
    except ValueError:
        target = 0
    if target < 1:
        raise PrepError(f"--reward {spec}: length takes a target number of tokens of at least 1 (length:200)")
    return _named(_length(target), f"length_{target}")


def _named(function: Reward, name: str) -> Reward:
    """TRL logs each function's mean reward as rewards/<__name__>/mean."""
    function.__name__ = function.__qualname__ = name
    return function


def _from_file(spec: str, path: Path, function: str) -> Reward:
    if not function:
        raise PrepError(f"--reward {spec}: name the function too, FILE.py:FUNCTION")
    if not path.is_file():
        raise PrepError(f"--reward {spec}: no file {path}")
    name = f"prep_reward_{abs(hash(str(path.resolve())))}"
    loaded = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loaded)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        loaded.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - the user's file: any error it raises is theirs to fix, named
        del sys.modules[name]
        raise PrepError(f"--reward {spec}: importing {path} failed: {type(e).__name__}: {e}") from None
    found = getattr(module, function, None)
    if not callable(found):
        raise PrepError(f"--reward {spec}: {path} defines no function {function}")
    return found


def answer_text(completion: str) -> str:
    """What a completion answers: the text after its last `</think>`, stripped."""
    return completion.rpartition("</think>")[2].strip()


def _exact(column: str) -> Reward:
    def reward(completions: list[str], **kwargs: Any) -> list[float | None]:
        return [None if want is None else float(answer_text(c) == str(want).strip())
                for c, want in zip(completions, kwargs[column], strict=True)]

    return reward


def _math(column: str) -> Reward:
    def reward(completions: list[str], **kwargs: Any) -> list[float | None]:
        return [None if want is None else float(math_equal(final_answer(answer_text(c)), str(want)))
                for c, want in zip(completions, kwargs[column], strict=True)]

    return reward


def _format(pattern: re.Pattern[str]) -> Reward:
    def reward(completions: list[str], **_: Any) -> list[float | None]:
        return [float(pattern.fullmatch(c.strip()) is not None) for c in completions]

    return reward


def _length(target: int) -> Reward:
    def reward(completion_ids: list[list[int]], **_: Any) -> list[float | None]:
        return [max(0.0, 1 - abs(len(ids) - target) / target) for ids in completion_ids]

    return reward


def final_answer(text: str) -> str:
    """The answer a math completion gives: its last `\\boxed{...}` (braces balanced), else its last number,
    else the text."""
    at = text.rfind("\\boxed{")
    if at >= 0:
        depth, start = 0, at + len("\\boxed{")
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth < 0:
                return text[start:i].strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else text.strip()


def math_equal(given: str, want: str) -> bool:
    """Equal as numbers (exact fractions, so 0.5 = 1/2 = \\frac{1}{2}), else as text without spaces and `$`."""
    a, b = _number(given), _number(want)
    if a is not None and b is not None:
        return a == b
    return _plain(given) == _plain(want)


def _plain(text: str) -> str:
    return re.sub(r"[\s$]", "", text).removesuffix(".")


def _number(text: str) -> Fraction | None:
    t = _plain(text).replace(",", "").replace("\\!", "")
    if m := _FRAC.match(t):
        a, b = _number(m[1]), _number(m[2])
        return a / b if a is not None and b else None
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
