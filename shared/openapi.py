"""The gateway's OpenAPI 3.0 document, served at GET /openapi.json."""

from __future__ import annotations

from shared import scenarios
from shared.knowledge.api import openapi_paths

_ERROR = {"$ref": "#/components/schemas/Error"}
_CID = {"name": "id", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": r"^[0-9]{8}t[0-9]{6}-[0-9a-f]{24}$"}}
_TOKEN = [{"conversationToken": []}]
_API_KEY = [{"apiKey": []}]


def _errors(*codes: int) -> dict:
    names = {400: "bad input, naming the field", 401: "no credential", 403: "wrong credential",
             404: "no such conversation or route", 405: "method not allowed", 409: "conflict with the state",
             413: "too large, naming the limit", 503: "not configured"}
    return {str(c): {"description": names[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(description: str, schema: dict | None = None, status: int = 200) -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return {str(status): body}


LIMITS = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "max_turns": {"type": "integer", "minimum": 1, "maximum": scenarios.HARD_MAX_TURNS},
        "max_seconds": {"type": "integer", "minimum": 1, "maximum": scenarios.HARD_MAX_SECONDS},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": scenarios.HARD_MAX_TOKENS},
        "max_invocations": {"type": "integer", "minimum": 1, "maximum": 5000},
        "max_cost_cny": {"type": "number", "exclusiveMinimum": 0, "maximum": scenarios.HARD_MAX_COST_CNY},
    },
}

START = {
    "type": "object", "additionalProperties": False, "required": ["scenario", "input"],
    "properties": {
        "scenario": {"type": "string", "maxLength": 40},
        "input": {"type": "string", "minLength": 1, "maxLength": scenarios.MAX_INPUT_CHARS},
        "rounds": {"type": "integer", "minimum": 1, "maximum": 100},
        "humans": {"type": "array", "items": {"type": "string"}, "maxItems": scenarios.MAX_ROLES},
        "limits": LIMITS,
        "options": {"type": "object", "description": "the scenario's options (GET /scenarios lists them), e.g. "
                    "software_company's investment, n_round, code_review, run_tests",
                    "additionalProperties": {"oneOf": [{"type": "boolean"}, {"type": "number"}]}},
    },
}

HUMAN = {
    "type": "object", "additionalProperties": False, "required": ["role", "content"],
    "properties": {"role": {"type": "string"},
                   "content": {"type": "string", "minLength": 1, "maxLength": scenarios.MAX_INPUT_CHARS}},
}


def document() -> dict:
    conv = "/conversations/{id}"
    return {
        "openapi": "3.0.3",
        "info": {"title": "troupe", "version": "1",
                 "description": "MetaGPT teams as Function Compute functions that talk through OSS."},
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "the deployment's TROUPE_API_KEY"},
                "conversationToken": {"type": "http", "scheme": "bearer",
                                      "description": "the token returned when the conversation was created"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                                         "details": {"type": "object"}}},
                "Start": START, "Limits": LIMITS, "HumanMessage": HUMAN,
            },
        },
        "paths": {
            "/scenarios": {
                "get": {"summary": "the catalog", "responses": _ok("scenarios", {"type": "object"})},
                "post": {"summary": "add a scenario", "security": _API_KEY,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                         "responses": {**_ok("added", {"type": "object"}, 201), **_errors(400, 401, 403, 409, 413)}},
            },
            "/conversations": {
                "post": {"summary": "start a conversation", "security": _API_KEY,
                         "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                         "description": "a retry with the same key and body gets the same "
                                                        "conversation and token (409 with another body)",
                                         "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,100}$"}}],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": START}}},
                         "responses": {**_ok("started: id and token", {"type": "object"}, 201),
                                       **_errors(400, 401, 403, 409, 413, 503)}},
            },
            conv: {
                "get": {"summary": "status and messages", "security": _TOKEN,
                        "parameters": [_CID,
                                       {"name": "after", "in": "query", "schema": {"type": "string",
                                                                                  "pattern": r"^[0-9]{6}-[0-9a-f]{16}$"}},
                                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                                  "maximum": 500}}],
                        "responses": {**_ok("the conversation", {"type": "object"}), **_errors(400, 401, 403, 404)}},
            },
            conv + "/messages": {
                "post": {"summary": "a human participant's turn", "security": _TOKEN, "parameters": [_CID],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": HUMAN}}},
                         "responses": {**_ok("committed", {"type": "object"}, 201),
                                       **_errors(400, 401, 403, 404, 409, 413)}},
            },
            conv + "/cancel": {
                "post": {"summary": "stop it", "security": _TOKEN, "parameters": [_CID],
                         "responses": {**_ok("cancelled", {"type": "object"}), **_errors(401, 403, 404, 409)}},
            },
            conv + "/invocations": {
                "get": {"summary": "one record per function invocation", "security": _TOKEN, "parameters": [_CID],
                        "responses": {**_ok("records", {"type": "object"}), **_errors(401, 403, 404)}},
            },
            conv + "/usage": {
                "get": {"summary": "the bill", "security": _TOKEN, "parameters": [_CID],
                        "responses": {**_ok("rows and totals", {"type": "object"}), **_errors(401, 403, 404)}},
            },
            conv + "/artifacts": {
                "get": {"summary": "the project files (path, size, type)", "security": _TOKEN, "parameters": [_CID],
                        "responses": {**_ok("artifacts", {"type": "object"}), **_errors(401, 403, 404)}},
            },
            conv + "/artifacts.zip": {
                "get": {"summary": "all project files in one zip", "security": _TOKEN, "parameters": [_CID],
                        "responses": {"200": {"description": "a zip", "content": {"application/zip": {}}},
                                      **_errors(400, 401, 403, 404)}},
            },
            conv + "/artifacts/{path}": {
                "get": {"summary": "one project file", "security": _TOKEN,
                        "parameters": [_CID, {"name": "path", "in": "path", "required": True,
                                              "schema": {"type": "string", "maxLength": 400}}],
                        "responses": {"200": {"description": "the file (text types as UTF-8)"},
                                      **_errors(400, 401, 403, 404)}},
            },
            **openapi_paths(),
            "/openapi.json": {"get": {"summary": "this document", "responses": _ok("OpenAPI 3.0", {"type": "object"})}},
            "/": {"get": {"summary": "the web page: start, watch and join conversations",
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
            "/static/{file}": {"get": {"summary": "the web page's assets",
                                       "parameters": [{"name": "file", "in": "path", "required": True,
                                                       "schema": {"type": "string"}}],
                                       "responses": {"200": {"description": "a script, style or image"},
                                                     **_errors(404)}}},
        },
    }
