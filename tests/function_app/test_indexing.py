"""The function app indexed as the Functions host's Python worker indexes a v2 app: the script
file named by PYTHON_SCRIPT_FILE_NAME must exist in the project root, the module of that name is
imported with the root on sys.path, and exactly one top-level FunctionRegister is looked up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The worker's steps (azure_functions_worker loader.index_function_app and the metadata request),
# run in a fresh interpreter so nothing else is imported first.
INDEX_LIKE_THE_WORKER = r"""
import importlib, json, os, pathlib, re, sys
root = sys.argv[1]
sys.path.insert(0, root)
script = os.environ.get("PYTHON_SCRIPT_FILE_NAME", "function_app.py")
assert re.match(r"^[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py$", script), script
function_path = os.path.join(root, script)
assert os.path.exists(function_path), "the worker would fall back to v1 (function.json) indexing"
module = importlib.import_module(pathlib.Path(function_path).stem)
from azure.functions import FunctionRegister
apps = [getattr(module, n) for n in module.__dir__() if isinstance(getattr(module, n, None), FunctionRegister)]
assert len(apps) == 1, f"{len(apps)} top-level apps"
out = []
for f in apps[0].get_functions():
    out.append({"name": f.get_function_name(), "trigger": f.get_trigger().get_binding_name(),
                "bindings": [json.loads(b) for b in f.get_raw_bindings()],
                "json": json.loads(f.get_function_json()), "module": module.__name__,
                "module_file": module.__file__})
print(json.dumps(out))
"""


def index_app() -> list[dict]:
    completed = subprocess.run(
        [sys.executable, "-c", INDEX_LIKE_THE_WORKER, str(ROOT)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_worker_indexing_finds_every_function() -> None:
    """The trigger, the orchestrator and the five activities are indexed, each once."""
    functions = {f["name"]: f for f in index_app()}
    assert set(functions) == {
        "accept_action",
        "action_orchestrator",
        "plan_action",
        "dispatch_action",
        "record_action_status",
        "publish_action_update",
        "dead_letter_action",
    }
    assert functions["action_orchestrator"]["trigger"] == "orchestrationTrigger"
    for name in ("plan_action", "dispatch_action", "record_action_status", "dead_letter_action"):
        assert functions[name]["trigger"] == "activityTrigger"
        assert functions[name]["bindings"][0]["activity"] == name


def test_module_named_function_app_resolves_to_the_package() -> None:
    """`function_app` imports as the package (its __init__ exports the app), not the root marker file."""
    first = index_app()[0]
    assert first["module"] == "function_app"
    assert first["module_file"].endswith("function_app/__init__.py")
    assert (ROOT / "function_app.py").exists()


def test_servicebus_trigger_bindings_read_app_settings() -> None:
    """The trigger takes its queue from %SERVICEBUS_ACTIONS_QUEUE% and its connection from ServiceBusConnection,
    beside a durable client input."""
    accept = {f["name"]: f for f in index_app()}["accept_action"]
    by_type = {b["type"]: b for b in accept["bindings"]}
    assert by_type["serviceBusTrigger"]["queueName"] == "%SERVICEBUS_ACTIONS_QUEUE%"
    assert by_type["serviceBusTrigger"]["connection"] == "ServiceBusConnection"
    assert by_type["serviceBusTrigger"]["direction"] == "IN"
    assert by_type["durableClient"]["name"] == "client"


def test_orchestrator_binding_name_matches_the_started_name() -> None:
    """The orchestrator function is named as start_new names it, so the host can find it."""
    from function_app.orchestration import ORCHESTRATOR

    names = [f["name"] for f in index_app() if f["trigger"] == "orchestrationTrigger"]
    assert names == [ORCHESTRATOR]
