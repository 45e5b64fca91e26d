"""Validate a KServe manifest against the schema the ``kserve`` package models.

Runs inside the KServe virtual environment (``make kserve-venv``), not nbdeploy's: it
reads YAML from the file named on the command line, walks it against the generated
OpenAPI models of ``kserve`` (V1beta1...) and of the Kubernetes client (V1...), and
prints one line per unknown field, wrong type or missing required field (the models'
own constructors check those). Exit 0 only when valid.
"""

from __future__ import annotations

import sys

import kserve
import kubernetes.client.models as k8s
import yaml

PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
    "ResourceQuantity": (str, int, float),
}


def model(name: str):
    found = getattr(kserve, name, None) or getattr(k8s, name, None)
    if found is None:
        raise SystemExit(f"unknown schema type {name}")
    return found


def check(value, type_name: str, path: str, errors: list[str]):
    """Walk ``value`` against ``type_name``, building the model objects on the way (their
    constructors refuse missing required fields); the built value back."""
    if type_name.lower().startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return None
        inner = type_name[5:-1]
        return [check(item, inner, f"{path}[{i}]", errors) for i, item in enumerate(value)]
    if type_name.lower().startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping")
            return None
        inner = type_name[5:-1].split(", ", 1)[1]
        return {key: check(item, inner, f"{path}.{key}", errors) for key, item in value.items()}
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name])
        if type_name == "int" and isinstance(value, bool):
            ok = False
        if not ok:
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__}")
        return value
    cls = model(type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {type_name} object")
        return None
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    fields = {}
    for key, item in value.items():
        if key not in by_key:
            errors.append(f"{path}.{key}: not a field of {type_name}")
        else:
            attr = by_key[key]
            fields[attr] = check(item, cls.openapi_types[attr], f"{path}.{key}", errors)
    try:
        return cls(**fields)
    except (ValueError, TypeError) as exc:
        errors.append(f"{path}: {type_name}: {exc}")
        return None


def main(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    errors: list[str] = []
    kind = (doc.get("apiVersion"), doc.get("kind"))
    if kind != ("serving.kserve.io/v1beta1", "InferenceService"):
        errors.append("not a serving.kserve.io/v1beta1 InferenceService")
    check(doc, "V1beta1InferenceService", "$", errors)
    for error in errors:
        print(error)
    print("valid" if not errors else f"{len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
