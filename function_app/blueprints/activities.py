"""Activity registrations: thin wrappers that hand the payload and the process runtime to
function_app.activities."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from function_app import activities
from function_app.runtime import current_runtime

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload", activity="plan_action")
async def plan_action(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.plan_action(payload, await current_runtime())


@bp.activity_trigger(input_name="payload", activity="dispatch_action")
async def dispatch_action(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.dispatch_action(payload, await current_runtime())


@bp.activity_trigger(input_name="payload", activity="record_action_status")
async def record_action_status(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.record_action_status(payload, await current_runtime())


@bp.activity_trigger(input_name="payload", activity="publish_action_update")
async def publish_action_update(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.publish_action_update(payload, await current_runtime())


@bp.activity_trigger(input_name="payload", activity="dead_letter_action")
async def dead_letter_action(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.dead_letter_action(payload, await current_runtime())
