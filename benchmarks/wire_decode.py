"""The wire contract's price: decoding and checking data batches vs msgpack alone, in the same run.

Every entry the uploader takes in is checked against the contract (bridge/wire/contract.py:
types, ranges, names, finite timestamps). This measures what that costs per entry on batches
as the bridge sends them (500 entries: 10 instruments x 3 channels, a run marker now and then),
against the raw baseline of ``msgpack.unpackb`` on the same bytes.

    .venv/bin/python -m benchmarks.wire_decode [--batches 2000]
"""

from __future__ import annotations

import argparse
import json
import time

import msgpack  # type: ignore[import-untyped]

from bridge.model import Quality, Reading
from bridge.names import new_run_id
from bridge.wire import contract

T0 = 1_765_000_000.0


def sample_batch(size: int = 500) -> bytes:
    entries: list[contract.LogEntry] = [contract.LogEntry(1, "run_start", T0, {
        "run_id": new_run_id(), "stream_name": "GaAs-042", "physical_sample": "S-17", "synth_source_id": None,
        "project_id": None, "tags": ["GaAs"]})]
    seq = 1
    while len(entries) < size:
        poll = T0 + seq * 0.1
        for instrument in range(10):
            for channel in range(3):
                seq += 1
                body = contract.reading_body(Reading(f"inst{instrument}", f"ch{channel}", 1e-7 * seq, Quality.OK,
                                                  poll + 0.001, "mbar"))
                body["p"] = poll
                entries.append(contract.LogEntry(seq, "reading", poll + 0.002, body))
    return contract.encode_batch("chamber-a", "e" * 32, entries[:size])


def measure(batches: int) -> dict[str, float]:
    data = sample_batch()
    entries = len(contract.decode_batch(data, "chamber-a").entries)

    def rate(decode: object) -> float:
        started = time.perf_counter()
        for _ in range(batches):
            decode(data)  # type: ignore[operator]
        return batches * entries / (time.perf_counter() - started)

    raw = rate(lambda d: msgpack.unpackb(d, raw=False))
    checked = rate(lambda d: contract.decode_batch(d, "chamber-a"))
    return {"entries_per_batch": entries, "raw_msgpack_entries_per_s": round(raw),
            "decode_and_check_entries_per_s": round(checked), "ratio": round(checked / raw, 3),
            "check_cost_us_per_entry": round(1e6 / checked - 1e6 / raw, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    print(json.dumps(measure(parser.parse_args().batches), indent=2))


if __name__ == "__main__":
    main()
