"""Build the Durable Functions app and register the blueprints. Nothing else happens here."""

from __future__ import annotations

import azure.durable_functions as df

from function_app.blueprints import activities, intake, orchestrators


def build_app() -> df.DFApp:
    app = df.DFApp()
    app.register_functions(intake.bp)
    app.register_functions(orchestrators.bp)
    app.register_functions(activities.bp)
    return app
