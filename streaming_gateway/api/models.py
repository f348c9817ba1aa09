"""`GET /v1/models` and `GET /v1/models/{model}`: the agents the caller may use, as OpenAI models.

Clients that list models before they start (chat UIs, IDE assistants, LangChain tooling) see one
model per agent; the id is what they pass as `model` on chat completions to talk to that agent.
"""

from __future__ import annotations

from aiohttp import web

from streaming_gateway.api.middlewares import principal
from streaming_gateway.errors import ModelNotFound
from streaming_gateway.keys import catalog_key

routes = web.RouteTableDef()


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    models = await request.app[catalog_key].usable(principal(request))
    return web.json_response({"object": "list", "data": [model.as_json() for model in models]})


@routes.get("/v1/models/{model}")
async def retrieve_model(request: web.Request) -> web.Response:
    wanted = request.match_info["model"]
    for model in await request.app[catalog_key].usable(principal(request)):
        if model.id == wanted:
            return web.json_response(model.as_json())
    raise ModelNotFound(wanted)
