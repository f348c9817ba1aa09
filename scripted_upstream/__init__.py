"""An OpenAI-compatible chat completions server that answers from a script.

It stands in for OpenAI / Azure OpenAI (a paid external API) in offline runs, tests and
benchmarks. The gateway reaches it over real HTTP with the real `openai` SDK, so everything on
our side of the wire is the production code path.
"""

from scripted_upstream.script import Rule, Script
from scripted_upstream.server import create_upstream_app

__all__ = ["Rule", "Script", "create_upstream_app"]
