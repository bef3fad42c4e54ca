"""Reading a config document: YAML or JSON text -> plain Python tree, then ${VAR} substitution.

YAML is read with YAML 1.2 core-schema scalars, not PyYAML's 1.1 defaults: in 1.1 `off`, `no`,
`on` are booleans (SPEC's `access_log: off` would become False), `1:30` is a base-60 int and an
unquoted date becomes a datetime. Here only true/false are booleans and dates stay strings.
Duplicate mapping keys are errors (PyYAML and json silently keep the last one, hiding a typo).

Substitution runs on the parsed tree, on string values only, so whatever a variable holds it
can never add keys or change types. Substituted strings are marked (``EnvStr``) so that a
numeric/boolean field may accept "${PORT}"-style values by parsing the text.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

Path = tuple  # of str (mapping key) | int (list index)

MAX_NODES = 200_000   # alias expansion ("billion laughs") and runaway documents stop here
MAX_DEPTH = 64


class EnvStr(str):
    """A string value that came (at least partly) from an environment variable."""

    __slots__ = ()


class SourceProblem(Exception):
    """The document could not be read at all (syntax); carries ready-made error lines."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


# --- YAML with 1.2 core scalars -------------------------------------------------------------

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(_Base):  # type: ignore[misc,valid-type]
    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[dict, Any, int, int]] = []  # (mapping, key, line, first line)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)  # YAML 1.2: "0755" is decimal 755, not octal


def _construct_map(loader, node):
    data: dict = {}
    yield data
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            loader.duplicates.append((data, key, line, first))
        else:
            seen[key] = line
    data.update(loader.construct_mapping(node))


_Loader.add_constructor(_INT, _construct_int)
_Loader.add_constructor(_MAP, _construct_map)


def _locate(tree: Any, target: Any) -> Path | None:
    """Path of the container object ``target`` inside ``tree`` (identity), for error paths."""
    stack = [(tree, ())]
    seen = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            stack.extend((v, path + (k,)) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(node) if isinstance(v, (dict, list)))
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _load_yaml(text: str, source: str) -> tuple[Any, list[tuple[Path, str]]]:
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise SourceProblem([f"{source}: invalid YAML{where}: {_one_line(what)}"]) from None
    except yaml.YAMLError as exc:
        # e.g. ReaderError ("unacceptable character ...\n  in ..."): an error is one line
        raise SourceProblem([f"{source}: invalid YAML: {_one_line(str(exc))}"]) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise SourceProblem([f"{source}: invalid YAML: {_one_line(str(exc))}"]) from None
    finally:
        loader.dispose()
    problems = []
    for mapping, key, line, first in loader.duplicates:
        path = _locate(data, mapping)
        if path is not None:
            problems.append((path + (str(key),), f"duplicate key (line {line}; first at line {first})"))
    return data, problems


def _load_json(text: str, source: str) -> tuple[Any, list[tuple[Path, str]]]:
    dups: list[tuple[dict, str]] = []

    def pairs(items):
        d: dict = {}
        for k, v in items:
            if k in d:
                dups.append((d, k))
            d[k] = v
        return d

    def bad_constant(name):
        raise ValueError(f"{name} is not a valid JSON number")

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=bad_constant)
    except json.JSONDecodeError as exc:
        raise SourceProblem(
            [f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    except (ValueError, RecursionError) as exc:
        raise SourceProblem([f"{source}: invalid JSON: {exc}"]) from None
    problems = []
    for mapping, key in dups:
        path = _locate(data, mapping)
        if path is not None:
            problems.append((path + (key,), "duplicate key"))
    return data, problems


def decode(data: str | bytes, source: str, fmt: str | None = None) -> tuple[Any, list[tuple[Path, str]]]:
    """Parse text as ``fmt`` ("yaml" | "json" | None = sniff). Returns (tree, key problems)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceProblem([f"{source}: not valid UTF-8 (byte {exc.start})"]) from None
    else:
        text = data[1:] if data.startswith("\ufeff") else data
        bad = _SURROGATE.search(text)
        if bad is not None:   # the YAML reader would raise UnicodeEncodeError on it
            raise SourceProblem([f"{source}: not valid Unicode text (a lone surrogate code "
                                 f"point at character {bad.start()})"])
    if fmt is None:
        # JSON documents are objects; YAML configs never start with "{" in practice, and when
        # one does (flow mapping) the JSON parser's error message would mislead, so retry YAML.
        if text.lstrip().startswith("{"):
            try:
                return _load_json(text, source)
            except SourceProblem:
                pass
        fmt = "yaml"
    if fmt == "json":
        return _load_json(text, source)
    return _load_yaml(text, source)


# --- ${VAR} substitution -------------------------------------------------------------------

_REF = re.compile(
    r"\$\$\{"                                                  # escape: $${ -> literal ${
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<dflt>:-(?:[^}$]|\$(?!\{))*)?\}"
    r"|\$\{"                                                   # anything else: malformed
)


_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_UNICODE = "not valid Unicode text (a lone surrogate code point)"


def substitute(tree: Any, env: Mapping[str, str], problems: list[tuple[Path, str]],
               source: str = "<config>") -> Any:
    """Copy of ``tree`` with ${VAR} references in string values replaced from ``env``.

    Also the place where pathological documents are cut off: the copy expands YAML aliases,
    so its node count and depth bound the work every later pass does.
    """
    budget = [MAX_NODES]

    def sub_str(s: str, path: Path) -> str:
        if "${" not in s:
            return s
        used = False
        malformed = False
        missing: list[str] = []

        def repl(m: re.Match) -> str:
            nonlocal used, malformed
            text = m.group(0)
            if text == "$${":
                return "${"
            name = m.group("name")
            if name is None:
                malformed = True
                return text
            used = True
            val = env.get(name)
            dflt = m.group("dflt")
            if dflt is not None:
                return val if val else dflt[2:]  # shell ":-": unset or empty takes the default
            if val is None:
                missing.append(name)
                return ""
            return val

        out = _REF.sub(repl, s)
        if malformed:  # the rest of such a string is not worth reading as references
            problems.append((path, "malformed variable reference: use ${NAME}, "
                                   "${NAME:-default}, or $${ for a literal ${"))
        else:
            for name in missing:
                problems.append((path, f"environment variable {name} is not set "
                                       f"(use ${{{name}:-default}} for a default)"))
        return EnvStr(out) if used else out

    def walk(node: Any, path: Path, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise SourceProblem([f"{source}: config too large (more than {MAX_NODES} values "
                                 f"after expanding aliases)"])
        if depth > MAX_DEPTH:
            raise SourceProblem([f"{format_path(path, source)}: config nested deeper than "
                                 f"{MAX_DEPTH} levels"])
        if isinstance(node, str):
            out = sub_str(node, path)
            if _SURROGATE.search(out) is None:
                return out
            # A "\ud800" escape in the text, or an environment variable that is not UTF-8:
            # such a string cannot be encoded, so every later .encode() would crash.
            problems.append((path, _NOT_UNICODE))
            clean = _SURROGATE.sub("\ufffd", out)
            return EnvStr(clean) if isinstance(out, EnvStr) else clean
        if isinstance(node, dict):
            copy = {}
            for k, v in node.items():
                if isinstance(k, str) and _SURROGATE.search(k) is not None:
                    clean = _SURROGATE.sub("\ufffd", k)
                    problems.append((path + (clean,), f"key {k!r} is {_NOT_UNICODE}"))
                    k = clean
                copy[k] = walk(v, path + (k,), depth + 1)
            return copy
        if isinstance(node, list):
            return [walk(v, path + (i,), depth + 1) for i, v in enumerate(node)]
        return node

    return walk(tree, (), 0)


def deep_copy_plain(tree: Any) -> Any:
    """Independent copy of a parsed tree (aliases already bounded by ``substitute``)."""
    if isinstance(tree, dict):
        return {k: deep_copy_plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [deep_copy_plain(v) for v in tree]
    return tree


_ODD_KEY = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]|: |^\s|\s$|^$")


def _key(seg: Any) -> str:
    """A mapping key as a path element; one that could break the "key.path: message" line
    (a newline or other control character, blank ends, ": ", empty) is shown quoted."""
    text = str(seg)
    if _ODD_KEY.search(text) is None:
        return text
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(message: str) -> str:
    """``message`` with control characters escaped: an error message quotes values from the
    document, and one with a newline in it must not become two error lines."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), message)


def format_path(path: Path, root: str) -> str:
    out = []
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        else:
            if out:
                out.append(".")
            out.append(_key(seg))
    return "".join(out) or root


def document_order(tree: Any, path: Path) -> tuple:
    """Sort key placing ``path`` where it appears in the document; absent keys sort after
    their present siblings (a "required" error lands at the end of its mapping)."""
    pos = []
    node = tree
    for seg in path:
        if isinstance(node, dict):
            if seg in node:
                for i, k in enumerate(node):
                    if k == seg:
                        pos.append(i)
                        break
                node = node[seg]
            else:
                pos.append(len(node))
                node = None
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            pos.append(seg)
            node = node[seg]
        else:
            pos.append(1 << 30)
            node = None
    return tuple(pos)
