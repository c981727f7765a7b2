"""The documentation cannot drift from the code.

docs/cli-reference.md must equal what docs/generate.py renders from ``--help``;
the hand-written docs must mention every problem category, status change kind,
config key, JSON schema and field, and show the real API signatures. When the
code grows a feature the docs do not mention, these tests fail.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
from click.testing import CliRunner

from volsegsync.cli import main
from volsegsync.config import DEFAULT_CONFIG_TEXT, parse_config
from volsegsync.dataset import Dataset
from volsegsync.errors import ConfigError
from volsegsync.index import Entry, FileRecord, format_index
from volsegsync.ops.pair import run_pair
from volsegsync.ops.snapshot import take_snapshot
from volsegsync.ops.status import KINDS, run_status
from volsegsync.ops.verify import run_verify
from volsegsync.problems import CATEGORIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMANDS_DIR = ROOT / "volsegsync" / "commands"
REGENERATE = "python docs/generate.py"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("volsegsync_docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def _doc(name: str) -> str:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under the ``## `` heading that contains ``heading``, up to the next one."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    found = [p for p in parts[1:] if heading in p.split("\n", 1)[0]]
    assert found, f"no '## ...{heading}...' section"
    return found[0]


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the markdown tables in ``text`` whose first cell is `code`: name -> cells."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def _all_commands(
    group: click.Group = main, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group, info_name="volsegsync")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


COMMAND_PATHS = sorted(_all_commands())


# --------------------------------------------------------------------------- CLI reference


def test_cli_reference_is_up_to_date() -> None:
    committed = _doc("cli-reference.md")
    rendered = generate.render()
    if committed != rendered:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    rendered.splitlines(keepends=True),
                    "docs/cli-reference.md",
                    "generated",
                )
            )[:60]
        )
        pytest.fail(
            f"docs/cli-reference.md is stale: a command's --help changed.\n"
            f"Regenerate it with: {REGENERATE}\n\n{diff}"
        )


def test_generator_check_mode_agrees() -> None:
    assert generate.run(["--check"]) == 0, f"stale reference; run: {REGENERATE}"


def test_render_is_independent_of_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    first = generate.render()
    monkeypatch.setenv("COLUMNS", "37")
    assert generate.render() == first


def test_every_command_is_in_the_reference() -> None:
    assert COMMAND_PATHS, "the CLI group has no commands"
    reference = _doc("cli-reference.md")
    headings = set(re.findall(r"^## (.+)$", reference, flags=re.MULTILINE))
    for path in COMMAND_PATHS:
        title = " ".join(("volsegsync", *path))
        assert title in headings, f"'{title}' missing from docs/cli-reference.md; {REGENERATE}"
        assert f"Usage: {title} " in reference, f"no --help output for '{title}'"
    assert set(generate.command_paths()) == set(COMMAND_PATHS)


@pytest.mark.parametrize("path", [(), *COMMAND_PATHS], ids=lambda p: " ".join(p) or "main")
def test_every_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="volsegsync")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s*Examples?:\s*$", result.output, flags=re.MULTILINE), (
        f"'volsegsync {' '.join(path)} --help' has no 'Example:' section "
        "(add one to the command's docstring, after a \\b line)"
    )


# --------------------------------------------------------------------------- categories, kinds


def test_every_problem_category_is_documented_with_its_severity() -> None:
    rows = _table(_section(_doc("verify.md"), "Problem categories"))
    for category, (severity, _) in CATEGORIES.items():
        assert category in rows, (
            f"problem category '{category}' is not documented in docs/verify.md"
        )
        assert rows[category][0] == severity, (
            f"docs/verify.md gives '{category}' severity {rows[category][0]!r}, "
            f"the code {severity!r}"
        )
    stale = set(rows) - set(CATEGORIES)
    assert not stale, f"docs/verify.md documents categories the code lacks: {sorted(stale)}"


def test_every_status_change_kind_is_documented() -> None:
    rows = _table(_section(_doc("status.md"), "Change kinds"))
    for kind in KINDS:
        assert kind in rows, f"status change kind '{kind}' is not documented in docs/status.md"
    stale = set(rows) - set(KINDS)
    assert not stale, f"docs/status.md documents kinds the code lacks: {sorted(stale)}"
    documented_order = [k for k in rows if k in KINDS]
    assert documented_order == list(KINDS), "docs/status.md lists the kinds in another order"


# --------------------------------------------------------------------------- configuration


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _known_keys(data: dict[str, Any]) -> list[str]:
    """The keys the parser accepts at one level, from its 'unknown key' error."""
    with pytest.raises(ConfigError) as info:
        parse_config(Path("config.toml"), data)
    m = re.search(r"unknown key \(known: ([^)]*)\)", str(info.value))
    assert m, f"unexpected config error: {info.value}"
    return [k.strip() for k in m.group(1).split(",")]


def _parser_keys() -> set[str]:
    """Every ``section.key`` the config parser accepts (tables included)."""
    probe = "__docs_probe__"
    keys: set[str] = set()
    for section in _known_keys({probe: 1}):
        if section == "remotes":  # tables named by the user: [remotes.NAME]
            keys.update(f"remotes.NAME.{k}" for k in _known_keys({section: {"NAME": {probe: 1}}}))
            continue
        keys.update(f"{section}.{key}" for key in _known_keys({section: {probe: 1}}))
    return keys


def test_every_default_config_key_is_documented_with_its_default() -> None:
    defaults = _flatten(tomllib.loads(DEFAULT_CONFIG_TEXT))
    assert defaults, "DEFAULT_CONFIG_TEXT holds no keys"
    rows = _table(_section(_doc("configuration.md"), "Keys"))
    for key, value in defaults.items():
        assert key in rows, f"config key '{key}' is not documented in docs/configuration.md"
        expected = f"`{json.dumps(value)}`"
        assert rows[key][0] == expected, (
            f"docs/configuration.md gives '{key}' the default {rows[key][0]}, "
            f"DEFAULT_CONFIG_TEXT {expected}"
        )


def test_every_key_the_parser_accepts_is_documented() -> None:
    accepted = _parser_keys()
    assert {"naming.separator", "verify.labels", "scan.exclude"} <= accepted
    rows = _table(_section(_doc("configuration.md"), "Keys"))
    missing = sorted(accepted - set(rows))
    assert not missing, f"config keys not documented in docs/configuration.md: {missing}"
    defaults = _flatten(tomllib.loads(DEFAULT_CONFIG_TEXT))
    known = accepted | set(defaults)
    stale = sorted(k for k in rows if k not in known)
    assert not stale, f"docs/configuration.md documents keys the parser rejects: {stale}"


def test_config_examples_are_valid() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", _doc("configuration.md"), flags=re.DOTALL)
    assert len(blocks) >= 3, "docs/configuration.md should show its examples as ```toml blocks"
    for block in blocks:
        parse_config(Path("docs/configuration.md"), tomllib.loads(block))


# --------------------------------------------------------------------------- JSON output


def _schema_documents() -> dict[str, set[str]]:
    """schema name -> the fields of its document (nested dict literals included)."""
    found: dict[str, set[str]] = {}
    for source in sorted(COMMANDS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Dict):
                continue
            keys = {
                k.value: v
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
            schema = keys.get("schema")
            if isinstance(schema, ast.Constant) and isinstance(schema.value, str):
                fields = set(keys)
                for value in keys.values():
                    if isinstance(value, ast.Dict):
                        fields.update(
                            k.value
                            for k in value.keys
                            if isinstance(k, ast.Constant) and isinstance(k.value, str)
                        )
                found[schema.value] = fields
    return found


def test_every_json_schema_is_documented() -> None:
    pattern = re.compile(r'"schema": "(volsegsync\.[^"]+)"')
    names = {m for f in COMMANDS_DIR.glob("*.py") for m in pattern.findall(f.read_text("utf-8"))}
    assert names, "no JSON schema names found in volsegsync/commands/*.py"
    assert names == set(_schema_documents()), "schema names not found by both scans"
    text = _doc("json-output.md")
    for name in sorted(names):
        assert f"`{name}`" in text, f"JSON schema {name} is not documented in docs/json-output.md"


@pytest.mark.parametrize("schema", sorted(_schema_documents()))
def test_every_json_field_is_documented(schema: str) -> None:
    section = _section(_doc("json-output.md"), f"`{schema}`")
    missing = sorted(f for f in _schema_documents()[schema] if f"`{f}`" not in section)
    assert not missing, f"fields of {schema} not documented in docs/json-output.md: {missing}"


# --------------------------------------------------------------------------- index format


def test_index_parsing_snippet_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", _doc("index-format.md"), flags=re.DOTALL)
    assert blocks, "docs/index-format.md has no ```python snippet"
    vol = FileRecord("volumes/A-b-D01012000.nii.gz", 10, "0" * 32)
    seg = FileRecord("segmentations/A-b-D01012000-v2.nrrd", 20, "1" * 32)
    lone_vol = FileRecord("volumes/B-b-D01012000.nii.gz", 30, "2" * 32)
    lone_seg = FileRecord("segmentations/C-b-D01012000.nrrd", 40, "3" * 32)
    entries = [Entry(vol, seg, 2), Entry(lone_vol, None, None), Entry(None, lone_seg, None)]
    (tmp_path / "volsegsync.index").write_text(format_index(entries), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], "docs/index-format.md", "exec"), namespace)
    assert namespace["pairs"] == [(vol.path, seg.path)]


def test_index_format_header_is_documented() -> None:
    text = _doc("index-format.md")
    header = format_index([]).splitlines()
    assert all(h in text for h in header), "docs/index-format.md shows another header"


# --------------------------------------------------------------------------- API signatures


def _signature(name: str, func: Callable[..., Any], drop_first: bool = False) -> str:
    params = list(inspect.signature(func).parameters.values())
    if drop_first:
        params = params[1:]
    shown = [
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    ]
    return f"{name}({', '.join(shown)})"


API = [
    ("Dataset.open", Dataset.open, False),
    ("ds.read_index", Dataset.read_index, True),
    ("run_pair", run_pair, False),
    ("run_status", run_status, False),
    ("run_verify", run_verify, False),
    ("take_snapshot", take_snapshot, False),
]


@pytest.mark.parametrize("name,func,drop_first", API, ids=[a[0] for a in API])
def test_api_signature_is_documented(name: str, func: Callable[..., Any], drop_first: bool) -> None:
    text = " ".join(_doc("layout.md").split())
    expected = _signature(name, func, drop_first)
    assert expected in text, f"docs/layout.md should show the signature {expected}"


# --------------------------------------------------------------------------- state files


def test_every_state_file_is_documented() -> None:
    """Each file the code puts in .volsegsync/state/ is listed in docs/layout.md."""
    pattern = re.compile(r'state_dir\s*/\s*f?"([^"]+)"')
    names = {
        name
        for source in (ROOT / "volsegsync").rglob("*.py")
        for name in pattern.findall(source.read_text(encoding="utf-8"))
    }
    assert names, "no state files found in the code"
    text = _doc("layout.md")
    for name in sorted(names):
        parts = re.split(r"\{[^}]*\}", name)  # an f-string field matches any name part
        regex = "`\\.volsegsync/state/" + "[A-Za-z0-9_.-]+".join(map(re.escape, parts)) + "`"
        assert re.search(regex, text), f"state file {name} is not documented in docs/layout.md"
