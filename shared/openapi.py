"""The gateway's OpenAPI 3.0 document, served at GET /openapi.json: its paths are the declared
routes (shared/routes.py), the same table the gateway dispatches by."""

from __future__ import annotations

from shared.routes import HUMAN, LIMITS, START, openapi_paths


def document() -> dict:
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
        "paths": openapi_paths(),
    }
