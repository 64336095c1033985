"""The table of finding codes (prep.core.codes) is complete and has nothing unused: every code a finding or a
reject is made with anywhere in src/prep is in it, and every code in it is made somewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import prep
from prep.checks.schemas import _DEFAULT_CODES
from prep.core.codes import CODES, ERROR, INFO, WARNING

SRC = Path(prep.__file__).parent
# What makes a finding, and which positional argument is its code (verify's and the conversation walk's
# `add_finding` take the code first too; verify's `_report_rows` after the result and the mask; files.media's
# `_Failure`, a finding before the item it is about is known).
_MAKERS = {"finding": 0, "row_error": 0, "Finding": 0, "add_finding": 0, "_report_rows": 2, "_Failure": 0,
           "Mismatch": 0}

# Modules whose codes are data: the schema checker's come from the JSON Schemas (read by _schema_codes).
_DATA = {"checks/schemas.py"}


def _strings(node: ast.AST) -> list[str] | None:
    """The strings an expression can be: a literal, or either branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body), _strings(node.orelse)
        return None if body is None or orelse is None else body + orelse
    return None


def _made_codes() -> tuple[set[str], list[str]]:
    """Codes in the source, and the places whose code could not be read (they fail the test)."""
    codes: set[str] = set()
    unread: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                  if isinstance(t, ast.Name)}
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for call in ast.walk(tree):
            name = getattr(call, "func", None)
            name = getattr(name, "id", None) or getattr(name, "attr", None)
            if not isinstance(call, ast.Call) or name not in _MAKERS or len(call.args) <= max(_MAKERS[name], 1):
                continue
            arg = call.args[_MAKERS[name]]
            if (found := _strings(arg)) is not None:
                codes.update(found)
                continue
            if isinstance(arg, ast.Attribute):  # f.code: a finding copied to another place
                continue
            if isinstance(arg, ast.Name) and (found := _resolve(arg.id, call, functions, module)) is not None:
                codes.update(found)
                continue
            if str(path.relative_to(SRC)) in _DATA:
                continue
            unread.append(f"{path.relative_to(SRC)}:{call.lineno} {ast.unparse(arg)}")
    return codes, unread


def _resolve(name: str, call: ast.Call, functions: list[ast.FunctionDef], module: dict[str, ast.AST]
             ) -> list[str] | None:
    """A variable holding a code: assigned literals in the function around `call`, a loop over a module
    table of (code, ...) tuples, or the code parameter of a finding maker itself (its callers are read)."""
    around = [f for f in functions if f.lineno <= call.lineno <= (f.end_lineno or 0)]
    if not around:
        return None
    fn = min(around, key=lambda f: (f.end_lineno or 0) - f.lineno)
    if fn.name in _MAKERS and name in {a.arg for a in fn.args.args}:
        return []
    found: list[str] = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            if (values := _strings(node.value)) is None:
                return None
            found += values
        if (isinstance(node, ast.For) and isinstance(node.target, ast.Tuple) and isinstance(node.iter, ast.Name)
                and isinstance(node.target.elts[0], ast.Name) and node.target.elts[0].id == name):
            table = module.get(node.iter.id)
            if not isinstance(table, ast.Tuple):
                return None
            found += [e.elts[0].value for e in table.elts if isinstance(e, ast.Tuple)]
    return found or None


def _schema_codes() -> set[str]:
    """The codes the JSON Schemas name (x-prep) and the schema checker's defaults."""
    codes = {*_DEFAULT_CODES.values(), "bad_value"}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            codes.update(node.get("x-prep", {}).values())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in (SRC / "schemas").glob("*.json"):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return codes


def test_every_code_made_is_in_the_table_and_every_code_in_it_is_made() -> None:
    made, unread = _made_codes()
    made |= _schema_codes()
    assert not unread, f"codes this test cannot read (use a literal, or teach _resolve the pattern): {unread}"
    assert not made - set(CODES), f"codes made but missing from prep.core.codes: {sorted(made - set(CODES))}"
    assert not set(CODES) - made, f"codes in prep.core.codes that nothing makes: {sorted(set(CODES) - made)}"


def test_each_code_has_a_severity_and_a_hint() -> None:
    assert all(c.severity in (ERROR, WARNING, INFO) and c.hint and c.family for c in CODES.values())


def test_the_readme_lists_every_code_with_its_severity_and_hint() -> None:
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    for code, spec in CODES.items():
        row = f"| `{code}` | {spec.severity} | {spec.hint.replace('|', chr(92) + '|')} |"
        assert row in readme, row
