"""Graceful shutdown (SIGTERM). aiohttp has already stopped listening when this runs; here:
refuse new streams, let running answers finish within GATEWAY_SHUTDOWN_GRACE_SECONDS, interrupt
the rest (their end goes to the log), then end every client stream resumably once it has
delivered what is in the log (SSE: a `retry` and a comment; WebSocket: close 1012), so clients
resume on another pod with their last event id."""

from __future__ import annotations

import logging

from aiohttp import web

from streaming_gateway.keys import bus_stop_key, engine_key, settings_key, streams_key

log = logging.getLogger(__name__)

#: After the grace period, how long open streams get to flush the last events and close.
FLUSH_TIMEOUT_S = 8.0


async def on_shutdown(app: web.Application) -> None:
    if streams_key not in app:
        return  # the app never started
    streams = app[streams_key]
    streams.shutting_down = True
    grace = app[settings_key].shutdown_grace_s
    log.info(
        "shutdown: %d answers running, %d streams open; grace %.1f s",
        len(app[engine_key].answers),
        len(streams),
        grace,
    )
    if bus_stop_key in app:
        app[bus_stop_key].set()  # no new continuations on a pod going away; another pod takes the updates
    await app[engine_key].answers.drain(grace)
    await streams.stop_all(FLUSH_TIMEOUT_S, wake=app[engine_key].log.hub.wake_all)
    log.info("shutdown: %d streams still open after the flush", len(streams))
