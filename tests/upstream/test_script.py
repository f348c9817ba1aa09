"""The scripted upstream's templates and its shipped script: a small assistant that fills tool
arguments from the user's words and answers a tool result in a sentence, deterministically."""

from __future__ import annotations

import json
from typing import Any

from scripted_upstream.script import MAX_FILLED_ARGUMENT, Rule, Script, fill


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def after_tool(name: str, content: dict[str, Any] | str) -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
    body = content if isinstance(content, str) else json.dumps(content)
    return [
        {"role": "user", "content": "do it"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": body},
    ]


def answer(script: Script, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    rule = script.pick(messages)
    return rule.render_reply(messages), rule.render_tool_calls(messages)


def test_fill_takes_the_first_alternative_with_a_value() -> None:
    """`{a|b|'text'}` is the first of a, b with a value, else the literal; dotted paths reach into objects."""
    values = {"a": "", "b": {"c": "deep"}, "n": 3}
    assert fill("{a|b.c}", values) == "deep"
    assert fill("{a|missing|'fallback'}", values) == "fallback"
    assert fill("{n} items", values) == "3 items"


def test_fill_leaves_unknown_placeholders_and_json_alone() -> None:
    """A placeholder with no value stays as written (the mistake shows); JSON braces are not placeholders."""
    assert fill('{nothing} and {"k": 1}', {}) == '{nothing} and {"k": 1}'


def test_tool_arguments_come_from_named_groups_and_are_cut() -> None:
    """A tool argument template takes the rule's named regex group; a filled value is cut to the limit."""
    rule = Rule.model_validate(
        {
            "match": "ticket: (?P<subject>.*)",
            "tool_calls": [{"name": "t", "arguments": {"title": "{subject}", "n": 1}}],
        }
    )
    assert rule.render_tool_calls(user("ticket: paper jam!")) == [("t", {"title": "paper jam", "n": 1})]
    [(_, arguments)] = rule.render_tool_calls(user("ticket: " + "x" * 500))
    assert arguments["title"] == "x" * MAX_FILLED_ARGUMENT


def test_tool_result_rules_select_by_tool_and_status() -> None:
    """A tool-result rule with `tool` and `status` answers only that tool's result with that status."""
    rule = Rule.model_validate(
        {"on_tool_result": True, "tool": "get_ticket", "status": "failed", "reply": "{error}"}
    )
    assert rule.matches(after_tool("get_ticket", {"status": "failed", "error": "404"}))
    assert not rule.matches(after_tool("create_ticket", {"status": "failed", "error": "404"}))
    assert not rule.matches(after_tool("get_ticket", {"status": "succeeded"}))
    assert rule.render_reply(after_tool("get_ticket", {"status": "failed", "error": "404"})) == "404"


def test_default_script_fills_the_ticket_from_the_users_words() -> None:
    """The shipped script opens a ticket titled after what the user asked about (high priority when it
    sounds urgent), looks one up by the id the user gave, and asks for an id when none is given."""
    script = Script.load()
    assert answer(script, user("please open a ticket: printer on fire"))[1] == [
        ("create_ticket", {"title": "printer on fire", "priority": "high"})
    ]
    assert answer(script, user("Please open a ticket for my broken laptop"))[1] == [
        ("create_ticket", {"title": "my broken laptop", "priority": "normal"})
    ]
    # The subject may come first, or after a comma; a request with no subject keeps the user's words.
    for asked, title, priority in [
        ("My laptop won't boot, can you open a ticket?", "My laptop won't boot", "normal"),
        ("The printer is on fire, could you please open a ticket", "The printer is on fire", "high"),
        ("Please open a ticket, my screen is broken", "my screen is broken", "normal"),
        ("could you open a ticket regarding the slow login page", "the slow login page", "normal"),
        ("open a ticket", "open a ticket", "normal"),
    ]:
        assert answer(script, user(asked))[1] == [("create_ticket", {"title": title, "priority": priority})]
    assert answer(script, user("What is the status of ticket T-1A2B?")) == (
        "",
        [("get_ticket", {"ticket_id": "T-1A2B"})],
    )
    text, calls = answer(script, user("what's the status of my ticket?"))
    assert calls == [] and "Which ticket" in text


def test_default_script_answers_results_in_a_sentence() -> None:
    """After an action the shipped script answers from the result (id, title, status) and says so in
    words when the action failed or was dead-lettered."""
    script = Script.load()
    created: dict[str, Any] = {
        "status": "succeeded",
        "result": {"ticketId": "T-9F", "status": "open", "title": "printer on fire"},
    }
    assert answer(script, after_tool("create_ticket", created))[0] == (
        'I opened ticket T-9F for "printer on fire"; its status is open.'
    )
    found = {"status": "succeeded", "result": {**created["result"], "priority": "high"}}
    assert (
        answer(script, after_tool("get_ticket", found))[0]
        == 'Ticket T-9F ("printer on fire") is open, priority high.'
    )
    failed = answer(script, after_tool("get_ticket", {"status": "failed", "error": "404: no such ticket"}))[0]
    assert failed == "Sorry, that did not work: the action failed (404: no such ticket)."
    dead = answer(
        script, after_tool("create_ticket", {"status": "dead_lettered", "error": "gave up after 3 attempts"})
    )[0]
    assert "dead-lettered (gave up after 3 attempts)" in dead


def test_default_script_is_deterministic() -> None:
    """The same conversation gets the same answer every time."""
    script = Script.load()
    for messages in [user("please open a ticket: printer on fire"), after_tool("create_ticket", "not json")]:
        assert answer(script, messages) == answer(Script.load(), messages)
    assert (
        answer(script, after_tool("create_ticket", "not json"))[0]
        == "The action finished with status unknown: not json"
    )
