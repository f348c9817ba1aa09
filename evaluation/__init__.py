"""Offline evaluation of agent configurations through the real gateway, and online metrics.

`python -m evaluation run|compare|online|bisect`; see evaluation/__main__.py.
"""

from evaluation.cases import Case, Expect, load_cases
from evaluation.errors import EvaluationError, InvalidCases

__all__ = ["Case", "EvaluationError", "Expect", "InvalidCases", "load_cases"]
