"""Marker for the Azure Functions Python worker; never imported.

The worker checks that `function_app.py` exists in the project root before it indexes a v2 app,
then imports the module *named* `function_app` -- which resolves to the `function_app/` package
beside this file, because Python prefers a package over a module of the same name. The app lives
in function_app/__init__.py (built in function_app/app.py). See docs/architecture.md "Function app layout".
"""
