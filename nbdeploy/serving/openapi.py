"""``GET /openapi.json``: the served model's HTTP API as an OpenAPI 3 document.

Built from the model's signature, so request bodies name the real columns and
types; a fuzzer (schemathesis, see ``benchmarks/bench_fuzz.py``) drives it against a
live server, and every error it may meet is listed with its code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbdeploy.serving.adapter import LoadedModel

_TYPES = {"double": "number", "long": "number", "boolean": "boolean", "string": "string"}
_ERRORS = {
    "400": "bad_request: unparseable, two formats in one body, too deep, unknown Host",
    "401": "unauthorized: missing or wrong bearer token",
    "404": "not_found: no such route or model",
    "405": "method_not_allowed",
    "408": "request_timeout: the body did not arrive in time",
    "413": "payload_too_large: body over the byte limit or more rows than the row limit",
    "415": "unsupported_media_type: a POST must be application/json (or text/csv)",
    "422": "schema_violation: missing or extra column, wrong type, NaN/inf, empty batch",
    "429": "too_many_requests: over the per-token rate limit",
    "503": "unavailable: busy, or the audit log cannot be written",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(codes: str, schema: str = "Error") -> dict[str, Any]:
    return {
        code: {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": _ref(schema)}},
        }
        for code in codes.split()
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_body(properties: dict[str, Any], required: list[str], **more: Any) -> dict[str, Any]:
    """A required JSON object request body."""
    schema = {"type": "object", "properties": properties, "required": required, **more}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _columns(model: LoadedModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON schemas of one value per column, and of one list of values per column."""
    value: dict[str, Any] = {}
    for col in model.schema.columns:
        kind: Any = _TYPES[col.type]
        value[col.name] = {"type": [kind, "null"] if col.nullable else kind}
    listed = {name: {"type": "array", "items": v, "minItems": 1} for name, v in value.items()}
    return value, listed


def openapi(model: LoadedModel, deployment: str) -> dict[str, Any]:
    value, listed = _columns(model)
    names = list(value)
    record = {
        "type": "object",
        "properties": value,
        "required": names,
        "additionalProperties": False,
    }
    columnar = {
        "type": "object",
        "properties": listed,
        "required": names,
        "additionalProperties": False,
    }
    row = {"type": "array", "items": {}, "minItems": len(names), "maxItems": len(names)}
    mlflow_body = {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": row, "minItems": 1},
                        },
                        "required": ["data"],
                    },
                    "params": {"type": "object"},
                },
                "required": ["dataframe_split"],
                "additionalProperties": False,
            },
            *(
                {
                    "type": "object",
                    "properties": {
                        key: {"type": "array", "items": record, "minItems": 1},
                        "params": {"type": "object"},
                    },
                    "required": [key],
                    "additionalProperties": False,
                }
                for key in ("dataframe_records", "instances")
            ),
            {
                "type": "object",
                "properties": {"inputs": columnar, "params": {"type": "object"}},
                "required": ["inputs"],
                "additionalProperties": False,
            },
        ]
    }
    tensor = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": names},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": ["FP64", "INT64", "BOOL", "BYTES"]},
            "data": {"type": "array"},
        },
        "required": ["name", "shape", "datatype", "data"],
    }
    open_route: dict[str, Any] = {"security": []}
    ok = {"type": "object", "properties": {"status": {"type": "string"}}}
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": sorted({model.name, deployment})},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"nbdeploy deployment {deployment}",
            "version": str(model.version.version),
            "description": "A model served by nbdeploy; every 200 is in the audit log.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Predict (MLflow scoring protocol)",
                    "parameters": [
                        {"name": "X-Routing-Key", "in": "header", "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": mlflow_body},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _json(_ref("Predictions")),
                        **_errors("400 401 405 408 413 415 422 429 503"),
                    },
                }
            },
            "/v2/models/{name}/infer": {
                "post": {
                    "summary": "Predict (Open Inference Protocol V2)",
                    "parameters": [name_param],
                    "requestBody": _json_body(
                        {"id": {"type": "string"}, "inputs": {"type": "array", "items": tensor}},
                        ["inputs"],
                    ),
                    "responses": {
                        "200": _json({"type": "object"}),
                        **_errors("400 401 404 405 408 413 415 422 429 503", "OipError"),
                    },
                }
            },
            "/v2/models/{name}": {
                "get": {
                    "summary": "Model metadata (V2)",
                    "parameters": [name_param],
                    "responses": {"200": _json({"type": "object"}), **_errors("401 404 429 503")},
                }
            },
            "/v2/models/{name}/ready": {
                "get": {
                    "summary": "Model readiness (V2)",
                    "parameters": [name_param],
                    "responses": {"200": _json({"type": "object"}), **_errors("401 404 429 503")},
                }
            },
            "/v2/health/live": {
                "get": {**open_route, "summary": "Liveness", "responses": {"200": _json(ok)}}
            },
            "/v2/health/ready": {
                "get": {
                    "summary": "Readiness (V2)",
                    "responses": {"200": _json(ok), **_errors("401 429 503")},
                }
            },
            "/health": {
                "get": {**open_route, "summary": "200 when ready", "responses": {"200": _json(ok)}}
            },
            "/ping": {
                "get": {**open_route, "summary": "200 when ready", "responses": {"200": _json(ok)}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors("401 429 503"),
                    },
                }
            },
            "/info": {
                "get": {
                    "summary": "What this server serves",
                    "responses": {"200": _json({"type": "object"}), **_errors("401 429 503")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}), **_errors("401 429 503")},
                }
            },
            "/feedback": {
                "post": {
                    "summary": "Record ground truth for logged predictions",
                    "requestBody": _json_body(
                        {
                            "prediction_ids": {"type": "array", "items": {"type": "string"}},
                            "labels": {"type": "array"},
                        },
                        ["prediction_ids", "labels"],
                        additionalProperties=False,
                    ),
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"recorded": {"type": "integer"}}}
                        ),
                        **_errors("400 401 405 408 413 415 422 429 503"),
                    },
                }
            },
            "/admin/retire": {
                "post": {
                    "summary": "Take a challenger (shadow or split) out of traffic",
                    "requestBody": _json_body({"ref": {"type": "string"}}, ["ref"]),
                    "responses": {
                        "200": _json({"type": "object"}),
                        **_errors("400 401 404 405 408 413 415 429 503"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                            "required": ["code", "message"],
                        }
                    },
                    "required": ["error"],
                },
                "OipError": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Predictions": {
                    "type": "object",
                    "properties": {
                        "predictions": {"type": "array"},
                        "prediction_ids": {"type": "array", "items": {"type": "string"}},
                        "model_version": {"type": "string"},
                        "fallback": {"type": "array", "items": {"type": "boolean"}},
                        "fallback_reason": {"type": "array"},
                    },
                    "required": ["predictions", "prediction_ids", "model_version"],
                },
            },
        },
    }
