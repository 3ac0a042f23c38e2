"""YAML loading, dotted keys, and error text that names the file and the key path."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from expmatrix.config.strict import SpecError


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; a syntax error names the file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a YAML file") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: invalid YAML: {e}") from None


def load_mapping(path: Path, what: str = "a mapping") -> dict[str, Any]:
    """A YAML file whose top level must be a mapping."""
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected {what} at the top level, got {type(raw).__name__}")
    return raw


def short_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; keys that already hold dots stay dotted."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise SpecError(f"{key}: {p!r} is not a section")
    if value == {} and isinstance(d.get(last), dict):
        return  # an empty section adds nothing (it must not wipe what a lower layer set)
    d[last] = copy.deepcopy(value) if isinstance(value, dict | list) else value


def parse_set(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--set train.epochs=3` -> {'train.epochs': 3}; values are parsed as YAML."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------- error text


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field annotation can hold (through Annotated, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in models_in(arg)]


def _kind_tags(model: type[BaseModel]) -> tuple[str, ...]:
    field = model.model_fields.get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return tuple(str(a) for a in get_args(field.annotation))


def union_tags(annotation: Any, seen: set[type] | None = None) -> set[str]:
    """Every `kind` tag of a tagged union inside `annotation`: a tag is no key of an error's key path."""
    seen = set() if seen is None else seen
    tags: set[str] = set()
    for model in models_in(annotation):
        if model in seen:
            continue
        seen.add(model)
        tags.update(_kind_tags(model))
        for field in model.model_fields.values():
            tags |= union_tags(field.annotation, seen)
    return tags


def valid_keys(annotation: Any, loc: tuple) -> list[str]:
    """Field names of the (sub)model that holds `loc`'s last key, for 'unknown key' messages."""
    candidates, parts = models_in(annotation), list(loc[:-1])
    while True:
        if len(candidates) > 1 and parts:  # a tagged union: the tag picks the member
            candidates = [m for m in candidates if str(parts[0]) in _kind_tags(m)]
            parts.pop(0)
        if len(candidates) != 1:
            return []
        if not parts:
            return sorted(candidates[0].model_fields)
        field = candidates[0].model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        if get_origin(field.annotation) is dict and parts:  # a mapping: the next part is one of its keys
            parts.pop(0)
        candidates = models_in(field.annotation)


def describe_errors(error: ValidationError, annotation: Any) -> list[tuple[str, str]]:
    """(dotted key path, message) for each error of validating `annotation`; unknown keys list the valid ones."""
    tags = union_tags(annotation)
    out = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"] if p not in tags)
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the tag itself is what is wrong
            key = f"{key}.kind" if key else "kind"
        if e["type"] == "extra_forbidden":
            valid = valid_keys(annotation, e["loc"])
            msg = "unknown key" + (f"; valid keys: {', '.join(valid)}" if valid else "")
        elif e["type"] == "missing" or isinstance(e["input"], dict):
            msg = e["msg"]
        else:
            msg = f"{e['msg']}, got {e['input']!r}"
        out.append((key, msg))
    return out


def validate(annotation: Any, raw: Any, where: str) -> Any:
    """`raw` validated as `annotation` (a model or a type); the first error as a SpecError at `where: key`."""
    try:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation.model_validate(raw)
        from pydantic import TypeAdapter

        return TypeAdapter(annotation).validate_python(raw)
    except ValidationError as e:
        key, msg = describe_errors(e, annotation)[0]
        raise SpecError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}") from None
