"""Function registrations, one blueprint per concern; function_app.app registers them all."""
