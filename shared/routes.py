"""Every HTTP route of the gateway, declared once.

The gateway dispatches by this table (`find`), and GET /openapi.json is built from it
(shared/openapi.py), so the two cannot disagree. A route names its method, its path as an
OpenAPI template (`{id}`, `{kb}` match one path segment; a last `{path}` or `{file}` matches the
rest), the Gateway method that answers it, who may call it, and its OpenAPI operation.

Who may call it (`auth`):
  None        anyone (the catalog, the page, this document)
  "api_key"   the deployment's API key (TROUPE_API_KEY); `need` says what for, in the 401
  "token"     the conversation's own token (the route's `{id}` names the conversation)
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote

from shared import scenarios
from shared.errors import MethodNotAllowed, NotFound
from shared.knowledge.retrieval import MAX_K

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {400: "bad input, naming the field", 401: "no credential", 403: "wrong credential",
           404: "no such conversation, knowledge base, document or route", 405: "method not allowed",
           409: "conflict with the state", 413: "too large, naming the limit", 503: "not configured"}
_TOKEN = [{"conversationToken": []}]
_API_KEY = [{"apiKey": []}]
_REST = ("path", "file")
"""parameters that, last in a template, match the rest of the path"""


def errors(*codes: int) -> dict:
    return {str(c): {"description": _ERRORS[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def ok(description: str, schema: dict | None = None, status: int = 200, kind: str = "application/json") -> dict:
    body: dict = {"description": description}
    if schema is not None:
        body["content"] = {kind: {"schema": schema}}
    return {str(status): body}


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


# -- schemas the operations share ------------------------------------------------------------

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
                    "software_company's investment, n_round, code_review, test_rounds, run_tests",
                    "additionalProperties": {"oneOf": [{"type": "boolean"}, {"type": "number"}]}},
    },
}

HUMAN = {
    "type": "object", "additionalProperties": False, "required": ["role", "content"],
    "properties": {"role": {"type": "string"},
                   "content": {"type": "string", "minLength": 1, "maxLength": scenarios.MAX_INPUT_CHARS}},
}

DOCUMENT = {"type": "object", "additionalProperties": False, "required": ["path", "content"],
            "properties": {"path": {"type": "string", "maxLength": 256}, "content": {"type": "string"}}}

_CID = {"name": "id", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": r"^[0-9]{8}t[0-9]{6}-[0-9a-f]{24}$"}}
_KB = {"name": "kb", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"}}
_DOC_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256},
             "description": "relative document path, e.g. policies/refunds.md"}


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    """an OpenAPI path template"""
    handler: str
    """the Gateway method that answers: handler(req, **path parameters[, meta])"""
    operation: dict
    auth: str | None = None
    need: str = ""
    """what the API key is needed for, in the 401's message"""
    pattern: re.Pattern = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        names = re.findall(r"\{(\w+)\}", self.path)
        regex = re.escape(self.path)
        for i, name in enumerate(names):
            rest = i == len(names) - 1 and name in _REST and self.path.endswith("{" + name + "}")
            regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{'.+' if rest else '[^/]+'})")
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    def match(self, path: str) -> dict[str, str] | None:
        m = self.pattern.match(path)
        return {k: unquote(v) for k, v in m.groupdict().items()} if m else None


def _conv(method: str, tail: str, handler: str, operation: dict) -> Route:
    return Route(method, "/conversations/{id}" + tail, handler,
                 {"security": _TOKEN, "parameters": [_CID], **operation}, auth="token")


def _kb(method: str, tail: str, handler: str, operation: dict, *params: dict) -> Route:
    return Route(method, "/knowledge/{kb}" + tail, handler,
                 {"security": _API_KEY, "parameters": [_KB, *params], **operation},
                 auth="api_key", need="knowledge bases")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/", "page", {"summary": "the web page: start, watch and join conversations",
                               "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}),
    Route("GET", "/static/{file}", "page", {
        "summary": "the web page's assets",
        "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "a script, style or image"}, **errors(404)}}),
    Route("GET", "/openapi.json", "openapi", {"summary": "this document",
                                              "responses": ok("OpenAPI 3.0", {"type": "object"})}),
    Route("GET", "/scenarios", "catalog", {"summary": "the catalog", "responses": ok("scenarios", {"type": "object"})}),
    Route("POST", "/scenarios", "add_scenario", {
        "summary": "add a scenario", "security": _API_KEY, "requestBody": _json_body({"type": "object"}),
        "responses": {**ok("added", {"type": "object"}, 201), **errors(400, 401, 403, 409, 413)}},
        auth="api_key", need="adding a scenario"),
    Route("POST", "/conversations", "create", {
        "summary": "start a conversation", "security": _API_KEY,
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "a retry with the same key and body gets the same conversation and token "
                                       "(409 with another body)",
                        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,100}$"}}],
        "requestBody": _json_body({"$ref": "#/components/schemas/Start"}),
        "responses": {**ok("started: id and token", {"type": "object"}, 201), **errors(400, 401, 403, 409, 413, 503)}},
        auth="api_key", need="starting a conversation"),
    _conv("GET", "", "show", {
        "summary": "status and messages",
        "parameters": [_CID, {"name": "after", "in": "query",
                              "schema": {"type": "string", "pattern": r"^[0-9]{6}-[0-9a-f]{16}$"}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
        "responses": {**ok("the conversation", {"type": "object"}), **errors(400, 401, 403, 404)}}),
    _conv("POST", "/messages", "human_message", {
        "summary": "a human participant's turn", "requestBody": _json_body({"$ref": "#/components/schemas/HumanMessage"}),
        "responses": {**ok("committed", {"type": "object"}, 201), **errors(400, 401, 403, 404, 409, 413)}}),
    _conv("POST", "/cancel", "cancel", {
        "summary": "stop it", "responses": {**ok("cancelled", {"type": "object"}), **errors(401, 403, 404, 409)}}),
    _conv("GET", "/invocations", "invocations", {
        "summary": "one record per function invocation",
        "responses": {**ok("records", {"type": "object"}), **errors(401, 403, 404)}}),
    _conv("GET", "/usage", "usage", {
        "summary": "the bill", "responses": {**ok("rows and totals", {"type": "object"}), **errors(401, 403, 404)}}),
    _conv("GET", "/artifacts", "artifact_list", {
        "summary": "the project files (path, size, type)",
        "responses": {**ok("artifacts", {"type": "object"}), **errors(401, 403, 404)}}),
    _conv("GET", "/artifacts.zip", "artifact_zip", {
        "summary": "all project files in one zip",
        "responses": {"200": {"description": "a zip", "content": {"application/zip": {}}}, **errors(400, 401, 403, 404)}}),
    _conv("GET", "/artifacts/{path}", "artifact", {
        "summary": "one project file",
        "parameters": [_CID, {"name": "path", "in": "path", "required": True,
                              "schema": {"type": "string", "maxLength": 400}}],
        "responses": {"200": {"description": "the file (text types as UTF-8)"}, **errors(400, 401, 403, 404)}}),
    _kb("GET", "", "kb_list", {
        "summary": "a knowledge base's documents: size, chunks, status (indexed, pending, refused)",
        "responses": {**ok("the documents", {"type": "object"}), **errors(400, 401, 403, 404)}},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}),
    _kb("GET", "/documents", "kb_list", {
        "summary": "the same list", "responses": {**ok("the documents", {"type": "object"}), **errors(400, 401, 403, 404)}},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}),
    _kb("POST", "/documents", "kb_put", {
        "summary": "add or replace a document (.md, .markdown, .txt, .pdf, ...); the indexer indexes it",
        "requestBody": {"required": True, "content": {"application/json": {"schema": DOCUMENT},
                                                      "text/plain": {"schema": {"type": "string"}}}},
        "responses": {**ok("stored; indexing pending", {"type": "object"}, 202), **errors(400, 401, 403, 409, 413)}},
        {"name": "path", "in": "query", "schema": {"type": "string"},
         "description": "with a text body: the document's path"}),
    _kb("GET", "/documents/{path}", "kb_get", {
        "summary": "a document's text",
        "responses": {**ok("the text", {"type": "string"}, kind="text/plain"), **errors(400, 401, 403, 404)}},
        _DOC_PATH),
    _kb("DELETE", "/documents/{path}", "kb_delete", {
        "summary": "delete a document and its passages",
        "responses": {**ok("deleted", {"type": "object"}), **errors(400, 401, 403, 404)}}, _DOC_PATH),
    _kb("GET", "/search", "kb_search", {
        "summary": "the best passages for a query (BM25)",
        "responses": {**ok("passages: id, doc, chunk, heading, text, score", {"type": "object"}),
                      **errors(400, 401, 403, 404)}},
        {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K}}),
)


def find(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for `method path` and its path parameters; NotFound when no route has the
    path, MethodNotAllowed (naming the methods it has) when it has it for another method.
    HEAD is answered as GET."""
    allowed = []
    for route in ROUTES:
        params = route.match(path)
        if params is None:
            continue
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route, params
        allowed.append(route.method)
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; use {', '.join(dict.fromkeys(allowed))}")
    raise NotFound(f"no route for {method} {path[:100]}")


def openapi_paths() -> dict:
    """The routes as OpenAPI 3.0 path items, in declaration order."""
    paths: dict[str, dict] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = route.operation
    return paths
