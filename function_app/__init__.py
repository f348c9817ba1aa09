"""The action pipeline's Azure Functions app (Python v2 model, Durable Functions).

The Functions worker imports the module named by PYTHON_SCRIPT_FILE_NAME (default
`function_app.py`) from the project root and looks for a top-level app object in it. Here that
name resolves to this package (a package wins over a same-named module in one directory), so the
app is exported from here; the root `function_app.py` exists only so the worker's existence check
for that file selects v2 indexing. See docs/architecture.md "Function app layout".
"""

from function_app.app import build_app

app = build_app()

__all__ = ["app"]
