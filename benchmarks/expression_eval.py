"""What an expression costs per evaluation: the bridge's evaluate (values table, staleness) vs the bare library.

The trigger of automatic runs evaluates its expressions once per poll of an instrument they
name (bridge/edge/triggers.py); rules will do the same. This measures, in the same run, the
``cel`` library's ``Program.execute`` on a ready context (the raw baseline) and
:meth:`bridge.expressions.Expression.evaluate`, which also looks every channel up in the
latest-values table and judges its age and quality; plus the one-off cost of checking and
compiling the expression at config load. Decision 0006 records the figures.

    .venv/bin/python -m benchmarks.expression_eval [--calls 20000]
"""

from __future__ import annotations

import argparse
import json
import time

from bridge.expressions import Latest, compile_expression
from bridge.model import Quality, Reading

EXPRESSION = "cell_ga.pv > 500.0 && pyrometer.temperature > 300.0"
CATALOG = {"cell_ga": ["pv", "working_setpoint", "output_power"], "pyrometer": ["temperature"]}
T0 = 1_765_000_000.0


def measure(calls: int) -> dict[str, object]:
    started = time.perf_counter()
    expression = compile_expression(EXPRESSION, CATALOG)
    first_ms = (time.perf_counter() - started) * 1e3  # includes importing the library
    started = time.perf_counter()
    compile_expression(EXPRESSION, CATALOG)
    again_ms = (time.perf_counter() - started) * 1e3
    latest = Latest({"cell_ga": 1.0, "pyrometer": 0.5})
    latest.update(Reading("cell_ga", "pv", 600.0, Quality.OK, T0, "degC"))
    latest.update(Reading("pyrometer", "temperature", 400.0, Quality.OK, T0, "degC"))
    program = expression._program  # the library's own object, for the baseline
    context = {"cell_ga": {"pv": 600.0}, "pyrometer": {"temperature": 400.0}}
    assert program.execute(context) is True and expression.evaluate(latest, T0 + 0.1).value is True

    def per_call(run: object) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            run()  # type: ignore[operator]
        return (time.perf_counter() - started) / calls * 1e6

    raw = per_call(lambda: program.execute(context))
    full = per_call(lambda: expression.evaluate(latest, T0 + 0.1))
    return {"expression": EXPRESSION, "first_compile_with_import_ms": round(first_ms, 1),
            "check_and_compile_ms": round(again_ms, 2),
            "library_execute_us": round(raw, 2), "bridge_evaluate_us": round(full, 2),
            "core_share_at_300_evaluations_per_s": round(300 * full / 1e6, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    print(json.dumps(measure(parser.parse_args().calls), indent=2))


if __name__ == "__main__":
    main()
