"""One thread's share of the OTLP receiver: decode + convert + seal per span, beside sealing alone.

    python benchmarks/trace_conversion.py [--requests 20] [--spans-per-request 256]

Builds the same gzipped OTLP protobuf requests as `trace_receiver.py` (GenAI spans of demo requests with
tools), then times, in this one thread, (1) what the gateway does per request off its event loop
(`TraceReceiver.convert`: gunzip, protobuf, the conventions, the canonical record's validation) followed
by sealing each call as the call log does (`calllog.seal`, AES-GCM), and (2) the baseline: sealing the
same calls alone, which every logged call pays, proxied or not. Prints spans/s for both and the ratio.
No network, no database: the end-to-end rate is `trace_receiver.py`'s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trace_receiver import trace_bodies  # noqa: E402

from slm_pipeline.core.crypto import KeyRing, new_key  # noqa: E402
from slm_pipeline.core.store.keys import ApiKey  # noqa: E402
from slm_pipeline.core.trace_formats import otlp  # noqa: E402
from slm_pipeline.gateway.calllog import seal  # noqa: E402
from slm_pipeline.gateway.traces import TraceReceiver  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--spans-per-request", type=int, default=256)
    args = parser.parse_args()
    ring = KeyRing.parse(new_key("bench"))
    receiver = TraceReceiver(None, SimpleNamespace(key_ring=ring), Path(tempfile.mkdtemp()), 64 << 20)
    key = ApiKey("bench", "bench-agent", False, None, datetime.now(timezone.utc), None)
    bodies, spans = trace_bodies(args.requests, args.spans_per_request)
    calls = [c for body in bodies for c in receiver.convert(body, otlp.PROTOBUF, "gzip", key, None).calls]
    assert len(calls) == spans, f"{spans - len(calls)} spans did not convert"

    def receive() -> None:
        for body in bodies:
            for call in receiver.convert(body, otlp.PROTOBUF, "gzip", key, None).calls:
                seal(call, ring)

    def seal_only() -> None:
        for call in calls:
            seal(call, ring)

    rates = {}
    for name, work in (("decode + convert + seal", receive), ("seal alone (baseline)", seal_only)):
        work()  # warm
        started = time.perf_counter()
        work()
        rates[name] = spans / (time.perf_counter() - started)
        print(f"{name:26s} {rates[name]:>10,.0f} spans/s (one thread, {spans:,} spans)")
    ratio = rates["decode + convert + seal"] / rates["seal alone (baseline)"]
    print(f"ratio: the receiver's per-span work runs at {ratio:.2f}x the rate of sealing alone")


if __name__ == "__main__":
    main()
