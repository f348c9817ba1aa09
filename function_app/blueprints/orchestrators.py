"""The orchestrator registration; the logic is function_app.orchestration (pure, replayable).

The function is named like the orchestration (`action_orchestrator`): that name is what the
durable client starts and what the history's ExecutionStarted event carries.
"""

from __future__ import annotations

import azure.durable_functions as df

from function_app import orchestration

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", input_type=dict)
def action_orchestrator(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    return (yield from orchestration.action_orchestrator(context))
