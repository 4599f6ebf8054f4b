"""A general assistant: one agent over eight tool suites, as real multi-tool agents are.

Each suite (file system, vehicle control, trading, travel, messaging, ticketing, math, social
posting) has its own tools (5-8 functions) and its own system prompt under one assistant persona.
Calls are often multi-turn, with an earlier tool call and its result. Each function is called rarely
(10-40 times in a few thousand records) while each suite is called often (100+), so clustering by
function leaves groups too small to train on. Its labels give both levels: `assistant.<suite>.<function>`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faker import Faker

from slm_pipeline.core.demo.agents import Agent, Answer, Task, ToolAnswer, dress, pick, tool

AGENT_ID = "general-assistant"
Gen = Callable[[Faker, random.Random], Any]


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    params: dict[str, tuple[str, Gen]]  # argument -> (JSON type, generator)
    phrasings: tuple[str, ...]  # str.format templates over the arguments


def _choice(*options: Any) -> Gen:
    return lambda fake, rng: options[rng.randrange(len(options))]


def _int(low: int, high: int) -> Gen:
    return lambda fake, rng: rng.randrange(low, high + 1)


def _float(low: float, high: float) -> Gen:
    return lambda fake, rng: round(rng.uniform(low, high), 2)


_FILE = _choice("report.txt", "notes.md", "budget.xlsx", "draft_v2.docx", "todo.txt", "photo_0412.jpg", "data.csv",
                "main.py", "README.md", "invoice_march.pdf", "config.yaml", "log_2026.txt")
_DIR = _choice("documents", "projects", "archive", "downloads", "photos", "tmp", "work", "backup", "src", "music")
_WORD = _choice("error", "TODO", "deadline", "invoice", "password", "budget", "meeting", "release")
_SYMBOL = _choice("AAPL", "MSFT", "NVDA", "GOOG", "AMZN", "TSLA", "META", "NFLX", "AMD", "INTC", "ORCL", "IBM")
_CITY = _choice("Boston", "Denver", "Seattle", "Austin", "Miami", "Chicago", "Portland", "Atlanta", "Phoenix",
                "Dallas", "San Diego", "Nashville")
_AIRPORT = _choice("BOS", "DEN", "SEA", "AUS", "MIA", "ORD", "PDX", "ATL", "PHX", "DFW", "SAN", "BNA", "JFK", "LAX")
_CLASS = _choice("economy", "business", "first")
_DAY = _choice("2026-12-03", "2026-12-10", "2026-12-18", "2027-01-05", "2027-01-12", "2027-02-01")
_TAG = _choice("ai", "travel", "food", "startups", "fitness", "music", "climate", "design")
_PRIORITY = _choice("low", "medium", "high", "urgent")


def _name(fake: Faker, rng: random.Random) -> str:
    return fake.first_name()


def _handle(fake: Faker, rng: random.Random) -> str:
    return "@" + fake.user_name()


def _ticket(fake: Faker, rng: random.Random) -> int:
    return rng.randrange(1000, 9999)


def _message_id(fake: Faker, rng: random.Random) -> str:
    return f"MSG-{rng.randrange(10000, 99999)}"


def _booking(fake: Faker, rng: random.Random) -> str:
    return f"BK{rng.randrange(100000, 999999)}"


def _order(fake: Faker, rng: random.Random) -> str:
    return f"T-{rng.randrange(10000, 99999)}"


def _post(fake: Faker, rng: random.Random) -> int:
    return rng.randrange(100000, 999999)


def _sentence(fake: Faker, rng: random.Random) -> str:
    return fake.sentence(nb_words=rng.randrange(5, 10)).rstrip(".")


SUITES: dict[str, tuple[str, list[Function]]] = {
    "file_system": ("You manage the user's files in a sandboxed home directory. Paths are relative to the "
                    "current directory. Never touch files the user did not name.", [
        Function("ls", "List the files of the current directory.", {"show_hidden": ("boolean", _choice(True, False))},
                 ("What files are in here? Show hidden ones: {show_hidden}.", "List this folder (hidden={show_hidden}).",
                  "ls please, hidden files {show_hidden}")),
        Function("cd", "Change the current directory.", {"folder": ("string", _DIR)},
                 ("Go into the {folder} folder.", "cd to {folder}", "Switch the working directory to {folder}.",
                  "Open the directory called {folder}.")),
        Function("mkdir", "Create a directory.", {"dir_name": ("string", _DIR)},
                 ("Make a new folder named {dir_name}.", "Create a directory {dir_name} here.",
                  "I need a folder called {dir_name}.")),
        Function("touch", "Create an empty file.", {"file_name": ("string", _FILE)},
                 ("Create an empty file called {file_name}.", "touch {file_name}", "Make a blank {file_name}.")),
        Function("cat", "Show a file's contents.", {"file_name": ("string", _FILE)},
                 ("Show me what's inside {file_name}.", "Print the contents of {file_name}.",
                  "Can you open {file_name} and display it?")),
        Function("rm", "Delete a file.", {"file_name": ("string", _FILE)},
                 ("Delete {file_name}.", "Remove the file {file_name}, I don't need it.", "Get rid of {file_name}.")),
        Function("mv", "Move or rename a file.", {"source": ("string", _FILE), "destination": ("string", _DIR)},
                 ("Move {source} into {destination}.", "Put {source} in the {destination} folder.",
                  "Relocate {source} to {destination}/.")),
        Function("grep", "Search a file for a pattern.", {"file_name": ("string", _FILE), "pattern": ("string", _WORD)},
                 ("Find the lines with '{pattern}' in {file_name}.", "Search {file_name} for {pattern}.",
                  "Does {file_name} mention {pattern} anywhere?")),
    ]),
    "vehicle_control": ("You control the user's connected car through its vehicle API. Confirm nothing in prose: "
                        "act through the tools. Safety first: the brake before the engine.", [
        Function("startEngine", "Start the engine.", {"ignitionMode": ("string", _choice("START", "STOP"))},
                 ("Turn the engine {ignitionMode}.", "Engine: {ignitionMode}, please.",
                  "Set the ignition to {ignitionMode}.")),
        Function("lockDoors", "Lock or unlock doors.", {"unlock": ("boolean", _choice(True, False)),
                                                         "door": ("string", _choice("driver", "passenger", "all"))},
                 ("Lock state for the {door} door(s): unlock={unlock}.", "Doors ({door}): set unlock to {unlock}.",
                  "Change the {door} door lock, unlock={unlock}.")),
        Function("pressBrakePedal", "Press the brake pedal.", {"pedalPosition": ("number", _float(0.1, 1.0))},
                 ("Press the brake to {pedalPosition}.", "Brake pedal at {pedalPosition} please.",
                  "Push the brake pedal to position {pedalPosition}.")),
        Function("fillFuelTank", "Add fuel (litres).", {"fuelAmount": ("number", _int(5, 60))},
                 ("Fill up {fuelAmount} litres of fuel.", "Add {fuelAmount} L to the tank.",
                  "Refuel with {fuelAmount} litres.")),
        Function("check_tire_pressure", "Read the tire pressure.", {"unit": ("string", _choice("psi", "bar"))},
                 ("What's my tire pressure in {unit}?", "Check the tyres, report in {unit}.",
                  "Are my tires inflated OK? Give it in {unit}.")),
        Function("set_climate", "Set the cabin temperature.", {"temperature": ("number", _int(16, 28)),
                                                                "fan_speed": ("integer", _int(1, 5))},
                 ("Set the cabin to {temperature} degrees, fan {fan_speed}.", "Climate: {temperature}C, fan speed {fan_speed}.",
                  "Make it {temperature} degrees in here with the fan at {fan_speed}.")),
        Function("get_zipcode", "The zip code of a city (for navigation).", {"city": ("string", _CITY)},
                 ("What's the zip code for {city}?", "Zip of {city}, for the nav.", "Look up {city}'s postal code.")),
    ]),
    "trading": ("You operate the user's brokerage account. Quote prices only from the tools; never give "
                "financial advice. Orders need a symbol, an amount and a price.", [
        Function("get_stock_info", "Price and volume of a stock.", {"symbol": ("string", _SYMBOL)},
                 ("How is {symbol} doing today?", "Get me the latest on {symbol}.", "What's {symbol} trading at?",
                  "Quote for {symbol} please.")),
        Function("get_watchlist", "The user's watchlist.", {"include_prices": ("boolean", _choice(True, False))},
                 ("Show my watchlist (with prices: {include_prices}).", "What's on my watchlist? prices={include_prices}",
                  "List the stocks I'm watching, include prices {include_prices}.")),
        Function("add_to_watchlist", "Add a stock to the watchlist.", {"symbol": ("string", _SYMBOL)},
                 ("Add {symbol} to my watchlist.", "Start watching {symbol} for me.", "Put {symbol} on the watchlist.")),
        Function("place_order", "Buy or sell shares.", {"order_type": ("string", _choice("buy", "sell")),
                                                        "symbol": ("string", _SYMBOL), "amount": ("integer", _int(1, 500)),
                                                        "price": ("number", _float(10, 900))},
                 ("{order_type} {amount} shares of {symbol} at ${price}.", "Place a {order_type} order: {amount} {symbol} @ {price}.",
                  "I want to {order_type} {amount} {symbol}, limit {price}.")),
        Function("cancel_order", "Cancel an open order.", {"order_id": ("string", _order)},
                 ("Cancel order {order_id}.", "Kill my open order {order_id}.", "Please withdraw order {order_id}.")),
        Function("get_order_history", "Past orders.", {"days": ("integer", _int(1, 90))},
                 ("Show my orders from the last {days} days.", "Order history, past {days} days.",
                  "What did I trade in the last {days} days?")),
    ]),
    "travel": ("You book travel for the user with the travel API. Airports are IATA codes; dates are "
               "YYYY-MM-DD. Verify the traveller before booking.", [
        Function("book_flight", "Book a flight.", {"from_airport": ("string", _AIRPORT), "to_airport": ("string", _AIRPORT),
                                                   "date": ("string", _DAY), "travel_class": ("string", _CLASS)},
                 ("Book me {travel_class} from {from_airport} to {to_airport} on {date}.",
                  "I need a {travel_class} seat {from_airport}->{to_airport}, {date}.",
                  "Reserve a flight {from_airport} to {to_airport} on {date} in {travel_class}.")),
        Function("get_flight_cost", "The fare of a route.", {"from_airport": ("string", _AIRPORT),
                                                             "to_airport": ("string", _AIRPORT), "travel_class": ("string", _CLASS)},
                 ("How much is {travel_class} from {from_airport} to {to_airport}?",
                  "Fare check: {from_airport} to {to_airport}, {travel_class}.",
                  "What would {from_airport}-{to_airport} cost in {travel_class}?")),
        Function("cancel_booking", "Cancel a booking.", {"booking_id": ("string", _booking)},
                 ("Cancel my booking {booking_id}.", "I can't make it, cancel {booking_id}.",
                  "Please drop reservation {booking_id}.")),
        Function("verify_traveler", "Check a traveller's identity.", {"first_name": ("string", _name),
                                                                      "passport_number": ("string", lambda f, r: f"P{r.randrange(1000000, 9999999)}")},
                 ("Verify traveller {first_name}, passport {passport_number}.",
                  "Check {first_name}'s passport {passport_number} before we book.",
                  "Identity check for {first_name} ({passport_number}).")),
        Function("set_budget_limit", "Set a travel budget.", {"budget_limit": ("number", _int(200, 5000))},
                 ("Cap my travel budget at ${budget_limit}.", "Set the trip budget to {budget_limit} dollars.",
                  "Don't let me spend more than {budget_limit} on this trip.")),
        Function("get_nearest_airport", "The closest airport to a city.", {"city": ("string", _CITY)},
                 ("Which airport is nearest to {city}?", "Closest airport to {city}?",
                  "I'm flying out of {city}, what's the nearest airport?")),
    ]),
    "messaging": ("You send and read the user's messages on the team messenger. Contacts are first names; "
                  "message ids look like MSG-12345.", [
        Function("send_message", "Send a message.", {"receiver": ("string", _name), "message": ("string", _sentence)},
                 ("Tell {receiver}: {message}.", "Send {receiver} a message saying '{message}'.",
                  "Message {receiver} that {message}.")),
        Function("view_messages", "Recent messages.", {"limit": ("integer", _int(3, 30))},
                 ("Show me my last {limit} messages.", "Any new messages? Show {limit}.", "Read out the latest {limit} messages.")),
        Function("delete_message", "Delete a message.", {"message_id": ("string", _message_id)},
                 ("Delete message {message_id}.", "Remove {message_id} from the inbox.", "Trash message {message_id}.")),
        Function("search_messages", "Search messages.", {"keyword": ("string", _WORD)},
                 ("Find messages about {keyword}.", "Search my inbox for '{keyword}'.", "Which messages mention {keyword}?")),
        Function("add_contact", "Add a contact.", {"user_name": ("string", _name)},
                 ("Add {user_name} to my contacts.", "Save {user_name} as a contact.", "New contact: {user_name}.")),
    ]),
    "ticketing": ("You manage the user's support tickets in the helpdesk. Ticket ids are numbers; priorities are "
                  "low, medium, high or urgent.", [
        Function("create_ticket", "Open a ticket.", {"title": ("string", _sentence), "priority": ("string", _PRIORITY)},
                 ("Open a {priority} ticket: {title}.", "File a ticket, priority {priority}, about: {title}.",
                  "New {priority}-priority issue: {title}.")),
        Function("get_ticket", "A ticket's details.", {"ticket_id": ("integer", _ticket)},
                 ("What's the status of ticket {ticket_id}?", "Show ticket #{ticket_id}.", "Pull up ticket {ticket_id}.")),
        Function("close_ticket", "Close a ticket.", {"ticket_id": ("integer", _ticket)},
                 ("Close ticket {ticket_id}, it's solved.", "Mark #{ticket_id} as resolved.", "We can close {ticket_id} now.")),
        Function("edit_ticket", "Change a ticket's priority.", {"ticket_id": ("integer", _ticket), "priority": ("string", _PRIORITY)},
                 ("Change ticket {ticket_id} to {priority} priority.", "Bump #{ticket_id} to {priority}.",
                  "Set the priority of {ticket_id} to {priority}.")),
        Function("list_tickets", "The user's open tickets.", {"status": ("string", _choice("open", "closed", "all"))},
                 ("List my {status} tickets.", "Which tickets are {status}?", "Show all {status} tickets I have.")),
    ]),
    "math": ("You are the calculator of the assistant: always compute with the math tools, never in your head.", [
        Function("add", "a + b.", {"a": ("number", _int(1, 9999)), "b": ("number", _int(1, 9999))},
                 ("What is {a} plus {b}?", "Add {a} and {b}.", "Sum of {a} and {b}?")),
        Function("subtract", "a - b.", {"a": ("number", _int(1, 9999)), "b": ("number", _int(1, 9999))},
                 ("What's {a} minus {b}?", "Subtract {b} from {a}.", "Take {b} away from {a}.")),
        Function("multiply", "a * b.", {"a": ("number", _int(2, 999)), "b": ("number", _int(2, 999))},
                 ("What's {a} times {b}?", "Multiply {a} by {b}.", "Product of {a} and {b}?")),
        Function("divide", "a / b.", {"a": ("number", _int(10, 99999)), "b": ("number", _int(2, 99))},
                 ("Divide {a} by {b}.", "What is {a} divided by {b}?", "How many times does {b} go into {a}?")),
        Function("power", "base ** exponent.", {"base": ("number", _int(2, 20)), "exponent": ("integer", _int(2, 9))},
                 ("What's {base} to the power of {exponent}?", "Raise {base} to {exponent}.", "{base}^{exponent} = ?")),
        Function("square_root", "The square root.", {"number": ("number", _int(2, 99999))},
                 ("Square root of {number}?", "What's the root of {number}?", "Compute sqrt({number}).")),
        Function("percentage", "part as a percentage of whole.", {"part": ("number", _int(1, 500)),
                                                                  "whole": ("number", _int(501, 5000))},
                 ("What percent of {whole} is {part}?", "{part} out of {whole} as a percentage?",
                  "Express {part}/{whole} in percent.")),
    ]),
    "social_posting": ("You post to the user's social account on their behalf. Handles start with @; keep "
                       "posts under 280 characters.", [
        Function("post_tweet", "Publish a post.", {"content": ("string", _sentence), "tag": ("string", _TAG)},
                 ("Post this with #{tag}: {content}.", "Tweet '{content}' tagged {tag}.", "Share on my feed: {content} #{tag}")),
        Function("retweet", "Repost a post.", {"post_id": ("integer", _post)},
                 ("Retweet post {post_id}.", "Share post #{post_id} on my timeline.", "Repost {post_id} please.")),
        Function("comment", "Reply to a post.", {"post_id": ("integer", _post), "comment_text": ("string", _sentence)},
                 ("Reply to post {post_id}: {comment_text}.", "Comment '{comment_text}' under {post_id}.",
                  "Leave a comment on {post_id} saying {comment_text}.")),
        Function("follow_user", "Follow an account.", {"handle": ("string", _handle)},
                 ("Follow {handle}.", "Start following {handle} for me.", "Add {handle} to the accounts I follow.")),
        Function("list_followers", "The user's followers.", {"limit": ("integer", _int(5, 100))},
                 ("Who are my latest {limit} followers?", "List {limit} of my followers.", "Show {limit} followers.")),
        Function("search_posts", "Search posts.", {"tag": ("string", _TAG)},
                 ("Find posts tagged #{tag}.", "What are people saying about {tag}?", "Search the feed for {tag}.")),
    ]),
}

PERSONA = ("You are Ava, a general-purpose personal assistant. You act only through the tools of the current "
           "session; when a request needs a tool, answer with one tool call.")
_JSON_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean"}


def _maker(function: Function) -> Callable[[Faker, random.Random], tuple[str, Answer]]:
    def make(fake: Faker, rng: random.Random) -> tuple[str, Answer]:
        arguments = {name: generate(fake, rng) for name, (_, generate) in function.params.items()}
        text = pick(rng, list(function.phrasings)).format(**arguments)
        return dress(rng, text[0].upper() + text[1:], fake), ToolAnswer(function.name, arguments)
    return make


def _tool_result(fake: Faker, rng: random.Random) -> dict[str, Any]:
    return {"status": "ok", "result": rng.choice([fake.word(), rng.randrange(1, 10_000), fake.sentence(nb_words=4)])}


def assistant_suites(weight: float = 1.0, seed: int = 18) -> list[Agent]:
    """The general assistant as one `Agent` per tool suite (same agent id), weights summing to `weight`.

    Function weights vary (0.7-1.3, fixed by `seed`), so that some functions are rare, as in real traffic."""
    weights = random.Random(seed)
    suites = []
    for suite, (instructions, functions) in SUITES.items():
        tools = [tool(f.name, f.description, {name: {"type": _JSON_TYPES[kind], "description": name.replace("_", " ")}
                                              for name, (kind, _) in f.params.items()}, list(f.params))
                 for f in functions]
        tasks = [Task(f"assistant.{suite}.{f.name}", "tool_call", _maker(f), round(weights.uniform(0.7, 1.3), 2))
                 for f in functions]
        suites.append(Agent(
            agent_id=AGENT_ID, teacher="gpt-4o-2024-08-06", system=f"{PERSONA}\n\nThis session: {instructions}",
            tools=tools, tasks=tasks, weight=weight / len(SUITES),
            history_tools={f.name: _tool_result for f in functions}, history=0.5,
        ))
    return suites


def suite_of(task_type: str) -> str:
    """`assistant.trading.get_stock_info` -> `assistant.trading` (other agents' task types are their own suite)."""
    parts = task_type.split(".")
    return ".".join(parts[:2]) if parts[0] == "assistant" else task_type
