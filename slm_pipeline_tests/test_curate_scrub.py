from __future__ import annotations

import copy
import re

import orjson
import pytest

from slm_pipeline.core.curate.recognizers import luhn_valid
from slm_pipeline.core.curate.scrub import UnscrubbableCall, call_texts, scrub_calls
from slm_pipeline.core.curate.surrogates import Replacer, surrogate

SALT = b"test-salt"


def call(user: str, arguments: dict | str, tool_result: str | None = None, system: str = "You book hotels.",
         description: str = "Book a hotel room.") -> tuple[dict, dict]:
    messages = [{"role": "system", "content": system}]
    if tool_result is not None:
        messages += [
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c0", "content": tool_result},
        ]
    messages.append({"role": "user", "content": user})
    request = {"model": "m", "messages": messages, "tools": [{"type": "function", "function": {
        "name": "book_hotel", "description": description,
        "parameters": {"type": "object", "properties": {"guest_name": {"type": "string"}}}}}]}
    args = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    response = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "book_hotel", "arguments": args}}]}}]}
    return request, response


def scrub(pii_analyzer, *calls, strategy="surrogate"):
    payloads = [copy.deepcopy(c) for c in calls]
    return scrub_calls(payloads, pii_analyzer, SALT, strategy)


def args_of(result) -> dict:
    return orjson.loads(result.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])


def test_same_value_same_surrogate_in_prompt_and_arguments(pii_analyzer):
    request, response = call(
        "Book Toronto for 2 nights for Joshua Wood, email joshua.wood@gmail.com, card 4111 1111 1111 1111.",
        {"city": "Toronto", "guest_name": "Joshua Wood", "guest_email": "joshua.wood@gmail.com"})
    [result] = scrub(pii_analyzer, (request, response))
    user = result.request["messages"][-1]["content"]
    args = args_of(result)
    assert "Joshua" not in user + str(args) and "joshua.wood@gmail.com" not in user + str(args)
    assert args["guest_name"] in user and args["guest_email"] in user  # the answer still copies the prompt
    assert args["city"] == "Toronto"  # cities are not personal data
    assert re.fullmatch(r"[^@\s]+@example\.(com|org|net)", args["guest_email"])
    card = re.search(r"\d{4} \d{4} \d{4} \d{4}", user).group(0)
    assert card != "4111 1111 1111 1111" and luhn_valid(card.replace(" ", ""))
    assert result.entities["PERSON"] >= 1 and result.entities["EMAIL_ADDRESS"] == 1
    assert args["guest_name"] in result.replacements


def test_every_text_is_covered_and_json_stays_valid(pii_analyzer):
    request, response = call(
        "Any update?",
        '{"note": "guest phone 508-906-3608", "nested": {"emails": ["ann.lee@yahoo.com"]}}',
        tool_result='{"customer": "Ann Lee", "email": "ann.lee@yahoo.com", "ssn": "508-71-3819"}',
        system="You work for Dana Scully (dana.scully@fbi.gov). Escalate to her.",
        description="Book a room; test account owner: dana.scully@fbi.gov",
    )
    [result] = scrub(pii_analyzer, (request, response))
    everything = orjson.dumps([result.request, result.response]).decode()
    without_tools = orjson.dumps([result.request["messages"], result.response]).decode()
    for secret in ("ann.lee@yahoo.com", "508-906-3608", "508-71-3819", "Ann Lee"):
        assert secret not in everything, secret
    assert "dana.scully@fbi.gov" not in without_tools
    # The tool definitions are the agent's code: never rewritten (the SLM sees them as sent at serving time).
    assert result.request["tools"] == request["tools"]
    tool_content = orjson.loads(result.request["messages"][3]["content"])  # still JSON
    assert set(tool_content) == {"customer", "email", "ssn"}
    assert isinstance(args_of(result)["nested"]["emails"], list)
    assert result.request["tools"][0]["function"]["parameters"]["properties"]["guest_name"] == {"type": "string"}


def test_argument_keys_are_evidence(pii_analyzer):
    request, response = call("Reset it.", {"username": "ann", "password": "correct-horse", "api_key": "k1b2c3d4e5f6"})
    [result] = scrub(pii_analyzer, (request, response))
    args = args_of(result)
    assert args["password"] != "correct-horse" and args["api_key"] != "k1b2c3d4e5f6"
    assert args["username"] == "ann"


def test_placeholders_are_numbered_per_call(pii_analyzer):
    request, response = call("Mail ann@gmail.com and bob@gmail.com, then ann@gmail.com again.",
                             {"to": ["ann@gmail.com", "bob@gmail.com"]})
    [result] = scrub(pii_analyzer, (request, response), strategy="placeholder")
    assert result.request["messages"][-1]["content"] == "Mail <EMAIL_1> and <EMAIL_2>, then <EMAIL_1> again."
    assert args_of(result) == {"to": ["<EMAIL_1>", "<EMAIL_2>"]}


def test_surrogates_are_stable_across_calls_and_depend_on_the_salt():
    one, two, other = Replacer(SALT), Replacer(SALT), Replacer(b"other")
    assert one("PERSON", "Ann Lee") == two("PERSON", "Ann Lee") != other("PERSON", "Ann Lee")


@pytest.mark.parametrize(("entity", "value", "shape"), [
    ("PHONE_NUMBER", "(508) 906-3608", r"\(\d{3}\) \d{3}-\d{4}"),
    ("US_SSN", "508-71-3819", r"\d{3}-\d{2}-\d{4}"),
    ("IBAN_CODE", "GB38ESZY14177763170669", r"GB\d{2}[A-Z]{4}\d{14}"),
    ("API_KEY", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t", r"sk-proj-[A-Za-z0-9]{24}"),
    ("IP_ADDRESS", "10.1.2.3", r"(192\.0\.2|198\.51\.100|203\.0\.113)\.\d+"),
    ("DATE_OF_BIRTH", "03/15/1980", r"\d{2}/\d{2}/\d{4}"),
])
def test_surrogates_keep_the_format(entity, value, shape):
    import random

    fake = surrogate(entity, value, random.Random(7))
    assert fake != value and re.fullmatch(shape, fake), fake


def test_iban_surrogates_have_valid_check_digits():
    import random

    fake = surrogate("IBAN_CODE", "DE89370400440532013000", random.Random(3))
    rearranged = fake[4:] + fake[:4]
    assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda r, s: r["messages"][-1].update(content="x" * 300_000), "text_too_large"),
    (lambda r, s: r["messages"][-1].update(content="\x00\x01binary\x02" * 10), "binary_content"),
    (lambda r, s: s["choices"][0]["message"]["tool_calls"][0]["function"].update(arguments='{"a": 1,'),
     "malformed_tool_arguments"),
])
def test_unanalysable_calls_are_set_aside_and_the_rest_goes_on(pii_analyzer, mutate, reason):
    bad, good = call("hello", {"a": 1}), call("Mail ann@gmail.com", {"to": "ann@gmail.com"})
    mutate(*bad)
    bad_result, good_result = scrub(pii_analyzer, bad, good)
    assert isinstance(bad_result, UnscrubbableCall) and bad_result.reason == reason
    assert "ann@gmail.com" not in orjson.dumps(good_result.request).decode()


def test_call_texts_lists_every_text_in_order():
    request, response = call("hi", {"a": "b"}, tool_result="plain result", description="desc")
    texts = [slot.text for slot in call_texts(request, response).slots]
    assert texts == ["You book hotels.", "earlier question", "plain result", "hi", "b"]  # not the tool definitions
