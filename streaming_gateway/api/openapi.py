"""`GET /openapi.json`: the OpenAPI 3.1 description of the gateway's HTTP API.

Request and event schemas come from the same pydantic models the handlers validate with, so the
description cannot drift from what is enforced.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from agent_contracts.events import StreamEvent
from streaming_gateway.api.feedback import FeedbackIn
from streaming_gateway.api.openai_request import ChatCompletionIn
from streaming_gateway.api.request_models import ConversationIn, MessageIn

routes = web.RouteTableDef()

REF = "#/components/schemas/{model}"


def _schema(
    components: dict[str, Any], name: str, source: type[BaseModel] | TypeAdapter[Any]
) -> dict[str, str]:
    schema = (
        source.json_schema(ref_template=REF)
        if isinstance(source, TypeAdapter)
        else source.model_json_schema(ref_template=REF)
    )
    components.update(schema.pop("$defs", {}))
    components[name] = schema
    return {"$ref": REF.format(model=name)}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@functools.lru_cache(maxsize=1)
def build_spec() -> dict[str, Any]:
    components: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "code": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "details": {},
                    },
                }
            },
        },
        "Conversation": {
            "type": "object",
            "required": ["id", "agent_config_version", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string"},
                "agent_config_version": {"type": "string"},
                "title": {"type": "string"},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
                "message_count": {"type": "integer"},
                "last_event_id": {"type": "integer"},
            },
        },
    }
    message_in = _schema(components, "MessageIn", MessageIn)
    conversation_in = _schema(components, "ConversationIn", ConversationIn)
    chat_in = _schema(components, "ChatCompletionRequest", ChatCompletionIn)
    feedback_in = _schema(components, "FeedbackIn", FeedbackIn)
    event = _schema(components, "StreamEvent", TypeAdapter(StreamEvent))
    conversation = {"$ref": REF.format(model="Conversation")}
    cid = {
        "name": "conversation_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }
    common = {
        "401": _error("Missing or invalid bearer token"),
        "429": _error("Rate limit or concurrent-stream limit; see Retry-After"),
        "503": _error("Conversation state unavailable or shutting down"),
    }
    owned = {**common, "404": _error("No such conversation for this user")}
    # Every route that reads a JSON body: unparseable is 400, valid JSON that fails the schema 422.
    json_body = {
        "400": _error("Body is not JSON: not UTF-8, malformed, nested too deeply (invalid_json)"),
        "413": _error("Body too large"),
        "422": _error("Invalid field"),
    }
    sse = {
        "text/event-stream": {
            "schema": {
                "type": "string",
                "description": "SSE: id = event id, event = type, data = StreamEvent",
            }
        }
    }
    paths: dict[str, Any] = {
        "/v1/conversations": {
            "post": {
                "operationId": "createConversation",
                "summary": "Start a conversation",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": conversation_in}},
                },
                "responses": {
                    "201": _json(conversation, "Created"),
                    **common,
                    **json_body,
                    "403": _error(
                        "The agent's access does not admit the caller (agent_not_allowed), or the named"
                        " version is not the agent's current one (operator_role_required)"
                    ),
                    "409": _error("The caller has as many conversations as allowed (conversation_limit)"),
                    "422": _error(
                        "Invalid field; unknown_agent_config or agent_config_withdrawn"
                        " on agent_config_version"
                    ),
                },
            },
            "get": {
                "operationId": "listConversations",
                "summary": "The caller's conversations, newest first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": conversation},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        }
                    ),
                    **common,
                    "422": _error("Invalid query"),
                },
            },
        },
        "/v1/conversations/{conversation_id}": {
            "parameters": [cid],
            "get": {
                "operationId": "getConversation",
                "summary": "A conversation with its messages",
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                conversation,
                                {
                                    "type": "object",
                                    "properties": {
                                        "messages": {"type": "array", "items": {"type": "object"}}
                                    },
                                },
                            ]
                        }
                    ),
                    **owned,
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete a conversation",
                "responses": {"204": {"description": "Deleted"}, **owned},
            },
        },
        "/v1/conversations/{conversation_id}/cancel": {
            "parameters": [cid],
            "post": {
                "operationId": "cancelAnswer",
                "summary": "Stop the answer in progress",
                "responses": {
                    "200": _json({"type": "object"}, "Nothing was running"),
                    "202": _json({"type": "object"}, "Cancelled"),
                    **owned,
                },
            },
        },
        "/v1/conversations/{conversation_id}/feedback": {
            "parameters": [cid],
            "post": {
                "operationId": "sendFeedback",
                "summary": "Rate an answer (1-5), counted for its config version",
                "requestBody": {"required": True, "content": {"application/json": {"schema": feedback_in}}},
                "responses": {
                    "201": _json({"type": "object"}, "Recorded"),
                    "200": _json({"type": "object"}, "Replaced the earlier rating of this message"),
                    **owned,
                    **json_body,
                    "422": _error("Invalid rating, comment or message id"),
                },
            },
        },
        "/v1/conversations/{conversation_id}/messages": {
            "parameters": [cid],
            "post": {
                "operationId": "sendMessage",
                "summary": "Send a message; with Accept: text/event-stream the answer streams as SSE",
                "requestBody": {"required": True, "content": {"application/json": {"schema": message_in}}},
                "responses": {
                    "200": {
                        "description": "The answer (SSE stream, or JSON when not streaming)",
                        "content": {**sse, "application/json": {"schema": {"type": "object"}}},
                    },
                    **owned,
                    **json_body,
                    "403": _error("The conversation's agent no longer admits the caller (agent_not_allowed)"),
                    "409": _error("Busy answering, or the conversation is full"),
                    "422": _error("Invalid field, or the conversation's version was withdrawn"),
                },
            },
        },
        "/v1/conversations/{conversation_id}/events": {
            "parameters": [cid],
            "get": {
                "operationId": "followEvents",
                "summary": "Replay events after Last-Event-ID / after, then follow",
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "until", "in": "query", "schema": {"type": "string", "enum": ["end"]}},
                ],
                "responses": {
                    "200": {"description": "SSE stream of StreamEvent", "content": sse},
                    **owned,
                    "422": _error("Unknown event id"),
                },
            },
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "OpenAI-compatible chat completions",
                "parameters": [{"name": "X-Conversation-Id", "in": "header", "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": chat_in}}},
                "responses": {
                    "200": {
                        "description": "chat.completion, or chat.completion.chunk SSE when stream",
                        "content": {**sse, "application/json": {"schema": {"type": "object"}}},
                    },
                    **owned,
                    "400": _error(
                        "Invalid or unsupported parameter (OpenAI's codes), a system message the agent"
                        " refuses, a tool result for no open tool call, or a parameter the model refused"
                    ),
                    "403": _error("The conversation's agent no longer admits the caller (agent_not_allowed)"),
                    "422": _error("The conversation's version was withdrawn (agent_config_withdrawn)"),
                    "409": _error("Busy answering, or the caller's conversation limit (conversation_limit)"),
                    "413": _error("Body too large"),
                    "502": _error("The model failed"),
                },
            },
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The agents the caller may use, as OpenAI models",
                "responses": {"200": _json({"type": "object", "required": ["object", "data"]}), **common},
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One agent the caller may use, as an OpenAI model",
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json({"type": "object", "required": ["id", "object", "created", "owned_by"]}),
                    **common,
                    "404": _error("No such agent for this caller (model_not_found)"),
                },
            }
        },
        "/v1/ws": {
            "get": {
                "operationId": "websocket",
                "summary": "WebSocket (JSON frames of StreamEvent)",
                "description": "Bearer token in Authorization, or a ticket from POST /v1/ws/tickets; "
                "access_token only where GATEWAY_WS_QUERY_TOKEN is enabled.",
                "parameters": [
                    {"name": "ticket", "in": "query", "schema": {"type": "string"}},
                    {"name": "access_token", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"101": {"description": "Switching protocols"}, **common},
            }
        },
        "/v1/ws/tickets": {
            "post": {
                "operationId": "issueWebSocketTicket",
                "summary": "A short-lived, single-use ticket that opens one WebSocket (?ticket=)",
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["ticket", "expires_in"],
                            "properties": {
                                "ticket": {"type": "string"},
                                "expires_in": {"type": "integer", "minimum": 1, "maximum": 60},
                            },
                        },
                        "Issued",
                    ),
                    **common,
                },
            }
        },
        "/healthz": {
            "get": {"operationId": "healthz", "security": [], "responses": {"200": _json({"type": "object"})}}
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}),
                    "503": _json({"type": "object"}, "Not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics; on GATEWAY_METRICS_PORT instead when that is set",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Streaming gateway",
            "version": "1.0.0",
            "description": "Authenticated chat over SSE, WebSocket and an OpenAI-compatible API. "
            f"Stream events: {event['$ref']}.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_spec())
