"""The pipeline on public function-calling traffic (BFCL's non-live categories), a figure per step.

    python benchmarks/public_traffic.py [--limit N] [--public-figures scrub|keep]     (make bench-public)

The traffic is built by `bfcl.py` (PyPI `bfcl-eval`, read from its wheel; the `live_*` and
`multi_turn_*` categories are held out and never read). It is imported into a temporary home,
collected, and curated by S2's core functions (no Dagster). S2's figures:

* calls in, kept, quarantined and filtered, each with its reason (they must reconcile);
* argument fidelity: the share of the teacher's tool-call argument values that reach the dataset
  unchanged, over the values that are not personal data (a value is personal when its key names a
  person or a contact: `PERSONAL_KEY`; or when it holds an e-mail address or a phone number);
* tool-definition fidelity: the share of kept calls whose `tools` are byte-identical to the agent's;
* a "laced" run: the same traffic with known fake personal data (names as objects of sentences,
  e-mail addresses, international phone numbers, street addresses) written into the user turns;
  the share of those values that no curated call holds any more, and the fidelity figures again.

Baseline figures (before issue 17) are printed beside the new ones. Steps S3 to S6 add their
figures in issues 18 and 19.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bfcl import bfcl_records, write_jsonl  # noqa: E402

BASELINE = {"arguments_unchanged": 0.866, "non_personal_rewritten": 0.065, "tools_rewritten": 0.345}
PERSONAL_KEY = re.compile(r"(^|_)(name|names|person|people|director|artist|artists|author|player|players|actor|"
                          r"actress|singer|composer|painter|scientist|inventor|president|employee|user|username|"
                          r"recipient|sender|email|phone|contact|address|owner|patient|customer|athlete|"
                          r"musician|band|celebrity|leader|discoverer|creator|founder)s?$", re.IGNORECASE)
_EMAIL_OR_PHONE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|\+?\d[\d\s().-]{8,}\d")


def leaves(value: Any, path: str = "") -> list[tuple[str, str, Any]]:
    """(path, last key, value) of every scalar inside a JSON value."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [(p, k, v) for i, item in enumerate(value) for p, k, v in leaves(item, f"{path}[{i}]")]
    return [(path, path.rsplit(".", 1)[-1].split("[")[0], value)]


def call_arguments(response: dict[str, Any]) -> list[tuple[str, str, Any]]:
    out = []
    for choice in response.get("choices") or []:
        for j, call in enumerate((choice.get("message") or {}).get("tool_calls") or []):
            arguments = call["function"]["arguments"]
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
            out += [(f"{j}:{call['function']['name']}{p}", k, v) for p, k, v in leaves(parsed)]
    return out


def personal(key: str, value: Any) -> bool:
    return bool(PERSONAL_KEY.search(key)) or (isinstance(value, str) and _EMAIL_OR_PHONE.search(value) is not None)


# --- laced traffic -------------------------------------------------------------------------------

LACES = [
    ("PERSON", "I am asking on behalf of {}.", "name"),
    ("PERSON", "Please send the answer to {} when it is ready.", "name"),
    ("EMAIL_ADDRESS", "My e-mail is {} if you need it.", "email"),
    ("PHONE_NUMBER", "You can call me on {}.", "phone"),
    ("STREET_ADDRESS", "I live at {}.", "address"),
]


def lace(records: list[dict[str, Any]], seed: int = 42) -> list[tuple[str, str, str]]:
    """Append a sentence with a known fake value to each user turn; (call_id, type, value) of each."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = {locale: Faker(locale) for locale in ("en_US", "en_GB", "de_DE", "fr_FR", "en_IN", "it_IT")}
    for i, fake in enumerate(fakers.values()):
        fake.seed_instance(seed + i)
    inserted = []
    for record in records:
        entity, template, kind = rng.choice(LACES)
        fake = fakers[rng.choice(list(fakers))]
        value = {"name": fake.name, "email": fake.free_email, "phone": fake.phone_number,
                 "address": lambda f=fake: f.street_address() + ", " + f.city()}[kind]()
        for message in record["request"]["messages"]:
            if message["role"] == "user":
                message["content"] = f"{message['content']} {template.format(value)}"
                break
        record["call_id"] += "-laced"
        inserted.append((record["call_id"], entity, value))
    return inserted


# --- the run ---------------------------------------------------------------------------------------

def curate(records: list[dict[str, Any]], work: Path, public_figures: str) -> Any:
    """Import, collect and curate with the core functions; the `CurationResult` of the one agent."""
    from slm_pipeline.core.collect import RAW_TABLE, collect_new_calls
    from slm_pipeline.core.curate.analyzer import SegmentAnalyzer
    from slm_pipeline.core.curate.pipeline import CurationConfig, curate_calls
    from slm_pipeline.core.importer import import_files
    from slm_pipeline.core.lake import Lake
    from slm_pipeline.core.store import LogStore

    traffic = write_jsonl(records, work / "traffic.jsonl")
    lake = Lake(str(work / "lake"))
    with LogStore(f"sqlite:///{work / 'store.sqlite'}") as store:
        report = import_files(store, [traffic], work / "quarantine")
        for agent in store.agents():
            collect_new_calls(store, lake, agent)
    config = CurationConfig(workers=1, public_figures=public_figures)  # type: ignore[arg-type]
    analyzer = SegmentAnalyzer(config.analyzer, workers=1)
    try:
        result = curate_calls(lake.read(RAW_TABLE, "bfcl"), analyzer, b"bench-salt", config)
    finally:
        analyzer.close()
    return report, result


def figures(records: list[dict[str, Any]], result: Any) -> dict[str, Any]:
    originals = {r["call_id"]: r for r in records}
    kept = changed_np = total_np = changed_all = total_all = personal_total = personal_changed = 0
    tools_same = 0
    changes: list[tuple[str, Any, Any]] = []
    for row in result.curated.iter_rows(named=True):
        kept += 1
        original = originals[row["call_id"]]
        request, response = orjson.loads(row["request"]), orjson.loads(row["response"])
        tools_same += orjson.dumps(request.get("tools")) == orjson.dumps(original["request"].get("tools"))
        before = call_arguments(original["response"])
        after = dict((p, v) for p, _, v in call_arguments(response))
        for path, key, value in before:
            same = after.get(path) == value
            total_all += 1
            changed_all += not same
            if personal(key, value):
                personal_total += 1
                personal_changed += not same
            else:
                total_np += 1
                changed_np += not same
                if not same:
                    changes.append((key, value, after.get(path)))
    return {"kept": kept, "values": total_all, "unchanged_all": 1 - changed_all / max(total_all, 1),
            "non_personal": total_np, "unchanged_non_personal": 1 - changed_np / max(total_np, 1),
            "personal": personal_total, "personal_changed": personal_changed,
            "tools_identical": tools_same / max(kept, 1), "changes": changes}


def laced_removal(result: Any, inserted: list[tuple[str, str, str]]) -> tuple[float, Counter[str], Counter[str]]:
    texts = {row["call_id"]: row["request"] + row["response"] for row in result.curated.iter_rows(named=True)}
    removed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for call_id, entity, value in inserted:
        if call_id not in texts:
            continue
        total[entity] += 1
        removed[entity] += orjson.dumps(value).decode()[1:-1] not in texts[call_id]
    return sum(removed.values()) / max(sum(total.values()), 1), removed, total


def report_counts(label: str, report: Any, result: Any) -> None:
    reasons = result.reason_counts
    quarantined = result.dropped.filter(result.dropped["stage"] == "quarantine").height
    filtered = result.dropped.height - quarantined
    print(f"[{label}] calls in {result.raw_rows} (import rejected {report.rejected if hasattr(report, 'rejected') else 0})"
          f" | kept {result.curated.height} | quarantined {quarantined} | filtered {filtered} | reasons {reasons}"
          f" | reconcile {'yes' if result.reconciles else 'NO'}")
    if result.residuals.height:
        print(f"[{label}] residual identifiers: {result.residual_summary()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N calls")
    parser.add_argument("--public-figures", choices=("scrub", "keep"), default="scrub")
    parser.add_argument("--samples", type=int, default=15, help="changed non-personal values to print")
    parser.add_argument("--no-laced", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("SLM_PIPELINE_HOME", tempfile.mkdtemp(prefix="bench-public-home-"))
    records = bfcl_records()[: args.limit]
    print(f"BFCL public categories: {len(records)} calls ({dict(Counter(r['workload_id'] for r in records))})")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report, result = curate(records, Path(tmp) / "plain", args.public_figures)
        plain = figures(records, result)
        report_counts("S2 plain", report, result)
        print(f"[S2 plain] argument values: {plain['values']} ({plain['non_personal']} not personal, "
              f"{plain['personal']} personal)")
        print(f"{'figure':<46} {'baseline':>9} {'now':>9}")
        print(f"{'argument values unchanged (all)':<46} {BASELINE['arguments_unchanged']:>9.3f} "
              f"{plain['unchanged_all']:>9.4f}")
        print(f"{'non-personal argument values unchanged':<46} {1 - BASELINE['non_personal_rewritten']:>9.3f} "
              f"{plain['unchanged_non_personal']:>9.4f}   (target >= 0.99)")
        print(f"{'calls whose tool definitions are unchanged':<46} {1 - BASELINE['tools_rewritten']:>9.3f} "
              f"{plain['tools_identical']:>9.4f}")
        print(f"{'personal argument values rewritten':<46} {'':>9} "
              f"{plain['personal_changed']:>4}/{plain['personal']}")
        for key, before, after in plain["changes"][: args.samples]:
            print(f"    changed  {key}: {before!r} -> {after!r}")
        if not args.no_laced:
            laced_records = orjson.loads(orjson.dumps(records))
            inserted = lace(laced_records)
            report, laced_result = curate(laced_records, Path(tmp) / "laced", args.public_figures)
            laced = figures(laced_records, laced_result)
            share, removed, total = laced_removal(laced_result, inserted)
            report_counts("S2 laced", report, laced_result)
            print(f"[S2 laced] laced personal values removed: {share:.4f} "
                  f"({ {k: f'{removed[k]}/{total[k]}' for k in total} })")
            print(f"[S2 laced] non-personal argument values unchanged {laced['unchanged_non_personal']:.4f}, "
                  f"tool definitions unchanged {laced['tools_identical']:.4f}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
