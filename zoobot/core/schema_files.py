"""Reading a schema file (YAML or JSON): every mistake names the file and the line.

A YAML syntax error names the file, line and column and how to fix it; a key written twice in one
mapping (YAML or JSON) is refused with both places, since readers keep only the last one and would
silently drop an answer and shift the label columns after it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml


class SchemaFileError(ValueError):
    """A schema file that cannot be read; `load_schema` raises it as a SchemaError."""


def read_schema_file(path: Path):
    """The parsed content of a .yaml/.yml/.json schema file (checked by `Schema.from_dict` after)."""
    text = path.read_text()
    return _parse_json(text, path) if path.suffix.lower() == ".json" else _parse_yaml(text, path)


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, first: yaml.Node, second: yaml.Node):
        super().__init__("while constructing a mapping", first.start_mark,
                         f"found duplicate key '{second.value}'", second.start_mark)
        self.first, self.second = first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping.

    PyYAML keeps the last of two equal keys, so a copy-pasted answer would silently replace another
    and shift every label column after it. Unquoted yes/no still load as booleans, as with
    `yaml.safe_load`; `_answer_name` turns them back into words.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys written beside `<<: *defaults` may override the merged ones
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable: the base class refuses it, with its position
                if first is not key_node:
                    raise _DuplicateKey(first, key_node)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, path: Path):
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        first, second = e.first, e.second
        # yes/Yes/true are one key to YAML; say so, or the user sees no repetition
        spelling = f" (as '{second.value}', which YAML reads as the same key)" if second.value != first.value else ""
        raise SchemaFileError(
            f"Schema file '{path}' has the key '{first.value}' twice in one mapping: at {_at(first.start_mark)} and "
            f"again at {_at(second.start_mark)}{spelling}. YAML would keep only the second and silently drop the "
            "first (e.g. losing an answer and shifting the label columns after it); rename or remove one of them."
        ) from None
    except yaml.MarkedYAMLError as e:
        raise SchemaFileError(
            f"Schema file '{path}' is not valid YAML: {_yaml_problem(e)}. Check the indentation and the ':' after "
            "each key at that line and the ones above it, close every '[' and '{', and quote names that contain "
            "':', '#', '[', ']', '{' or '}'."
        ) from None
    except yaml.reader.ReaderError as e:
        raise SchemaFileError(
            f"Schema file '{path}' contains a character YAML does not allow ({e.reason}, #x{e.character:04x}) "
            f"at {_at_index(text, e.position)}. Remove it, or save the file as plain UTF-8 text."
        ) from None


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    """'line 5, column 9: expected ...' plus where the construct it was reading began, which is often
    the real mistake (an unclosed '[' is noticed only on a later line)."""
    mark = error.problem_mark or error.context_mark
    text = f"{_at(mark) + ': ' if mark else ''}{error.problem or error.context}"
    if error.context and error.context_mark and error.problem:
        text += f" ({error.context} that starts at {_at(error.context_mark)})"
    return text


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"  # marks count from 0, editors from 1


def _at_index(text: str, index: int) -> str:
    line, line_start = text.count("\n", 0, index) + 1, text.rfind("\n", 0, index) + 1
    return f"line {line}, column {index - line_start + 1}"


def _parse_json(text: str, path: Path):
    def refuse_duplicates(pairs: list[tuple]) -> dict:
        keys = [k for k, _ in pairs]
        repeated = next((k for k in keys if keys.count(k) > 1), None)
        if repeated is not None:
            # The hook sees no positions: list where the key is written so the user can find the pair.
            written = rf"{re.escape(json.dumps(repeated, ensure_ascii=False))}\s*:"
            places = " and ".join(_at_index(text, m.start()) for m in re.finditer(written, text))
            raise SchemaFileError(
                f"Schema file '{path}' has the key '{repeated}' twice in one object (its keys: {keys}); the key is "
                f"written at {places}. JSON readers keep only the last and silently drop the first (e.g. losing "
                "an answer and shifting the label columns after it); rename or remove one of them.")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=refuse_duplicates)
    except json.JSONDecodeError as e:
        raise SchemaFileError(
            f"Schema file '{path}' is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}. JSON needs "
            "double-quoted keys and strings, a comma between items and none after the last."
        ) from None
