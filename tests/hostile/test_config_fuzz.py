"""Fuzzing ``chamber-bridge check`` with mutated copies of every shipped config (issue 11).

Each hypothesis example runs the real ``check`` in this process and holds it to the contract:
exit 0, or exit 2 with one line per problem headed by the file's name; never a traceback. The
mutations: bytes, lines, inserted anchors and aliases, deep nesting, huge values, wrong types.
Examples are derandomized (the same on every run, so CI is stable) and bounded in number.

The classic bombs then run in their own process under a 1 GB address-space limit, proving they
end with exit 2 well within a generous time bound and without a blow-up in memory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import MAX_CONFIG_BYTES, MAX_SCALAR
from tests.faults.conftest import Figures
from tests.helpers.cli import ROOT
from tests.hostile.test_config_hostile import alias_bomb, run_check

SEEDS = sorted((ROOT / "configs").rglob("*.yaml"))
SEED_TEXTS = [p.read_text(encoding="utf-8") for p in SEEDS]
SEED_DATA = [yaml.safe_load(text) for text in SEED_TEXTS]

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: bytes that mean something to YAML, a few that mean trouble elsewhere
SPECIAL = [b":", b"&a", b"*a", b"!", b"!!", b"[", b"]", b"{", b"}", b"-", b"\n", b" ", b"\t", b'"', b"'", b"%",
           b"|", b">", b"#", b"?", b",", b"<<", b"\x00", b"\xff", b"\xc3", b"\x1b[2J", b"\r", b"\\", b"---\n"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def assert_contract(path: Path, data: bytes) -> None:
    """``check`` on ``data``: 0, or 2 with every stderr line a problem of this file."""
    path.write_bytes(data)
    checked = run_check(path)  # fails on any traceback
    assert checked.code in (0, 2), checked
    if checked.code == 0:
        assert checked.stdout.startswith(f"{path}: ok (site "), checked
        return
    assert checked.lines, checked
    for line in checked.lines:
        assert line.startswith(f"{path}: ") and len(line) > len(f"{path}: "), line
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line), line  # escaped, never raw
    assert len(checked.lines) <= 51


def seed_text() -> st.SearchStrategy[str]:
    return st.sampled_from(SEED_TEXTS)


# ---------------------------------------------------------------- mutations


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(seed_text()).encode())
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "replace", "delete", "flip"]))
        piece = draw(st.sampled_from(SPECIAL) | st.binary(min_size=1, max_size=4))
        if op == "insert":
            data[at:at] = piece
        elif op == "replace":
            data[at:at + len(piece)] = piece
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@st.composite
def line_mutations(draw: st.DrawFn) -> bytes:
    lines = draw(seed_text()).splitlines()
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "foreign"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 8)) + lines[i]
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        else:  # a line of another config
            other = draw(seed_text()).splitlines()
            lines.insert(i, draw(st.sampled_from(other)))
    return "\n".join(lines).encode()


VALUE = re.compile(r"^(\s*(?:- )?[A-Za-z_][\w.]*:)[ \t]+(\S.*)$")


def value_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if VALUE.match(line) and not line.lstrip().startswith("#")]


@st.composite
def with_aliases(draw: st.DrawFn) -> bytes:
    """Anchors on some values, aliases (and merge keys) in place of others, or a bomb pasted in."""
    lines = draw(seed_text()).splitlines()
    candidates = value_lines(lines)
    if draw(st.booleans()) and candidates:
        anchored = draw(st.sampled_from(candidates))
        name = draw(st.sampled_from(["a", "x", "line", "a1"]))
        head, value = VALUE.match(lines[anchored]).groups()  # type: ignore[union-attr]
        lines[anchored] = f"{head} &{name} {value}"
        for i in draw(st.lists(st.sampled_from(candidates), max_size=4)):
            head, _ = VALUE.match(lines[i]).groups()  # type: ignore[union-attr]
            lines[i] = f"{head} *{draw(st.sampled_from([name, 'undefined']))}"
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), f"<<: *{name}")
    else:
        bomb = alias_bomb(draw(st.integers(2, 10)), draw(st.integers(2, 12))).splitlines()[1:]
        at = draw(st.integers(0, len(lines)))
        indent = " " * draw(st.sampled_from([0, 2, 4]))
        lines[at:at] = [indent + b for b in bomb]
    return "\n".join(lines).encode()


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    lines = draw(seed_text()).splitlines()
    candidates = value_lines(lines) or [0]
    i = draw(st.sampled_from(candidates))
    depth = draw(st.sampled_from([2, 63, 64, 65, 100, 1000, 5000]) | st.integers(1, 3000))
    style = draw(st.sampled_from(["flow list", "flow map", "mixed"]))
    if style == "flow list":
        value = "[" * depth + "1" + "]" * depth
    elif style == "flow map":
        value = "{k: " * depth + "1" + "}" * depth
    else:
        value = "[{k: " * (depth // 2) + "1" + "}]" * (depth // 2)
    match = VALUE.match(lines[i])
    lines[i] = f"{match.group(1)} {value}" if match else value
    return "\n".join(lines).encode()


@st.composite
def huge_values(draw: st.DrawFn) -> bytes:
    lines = draw(seed_text()).splitlines()
    candidates = value_lines(lines) or [0]
    i = draw(st.sampled_from(candidates))
    size = draw(st.sampled_from([MAX_SCALAR - 10, MAX_SCALAR + 1, 100_000, MAX_CONFIG_BYTES - 1000]))
    unit = draw(st.sampled_from(["x", "9", "1:", "a ", "é", "\\u0000"]))
    value = (unit * (size // len(unit) + 1))[:size].rstrip(":") or "x"
    if draw(st.booleans()):
        value = f'"{value}"'
    match = VALUE.match(lines[i])
    lines[i] = f"{match.group(1)} {value}" if match else value
    return "\n".join(lines).encode()


ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
    | st.sampled_from(["", "uploader", "../..", "/dev/zero", "a/b", "#", "+", "-1", "0x10", "1e9", "2024-13-45"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=8)


def node_paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            found += node_paths(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += node_paths(value, (*path, i))
    return found


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    """A valid config with one to three of its values (or whole sections) replaced by anything."""
    data = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(SEED_DATA))))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in node_paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):  # a wrong key instead of a wrong value
            parent[draw(st.text(min_size=1, max_size=12))] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(ANY_VALUE)
    return yaml.safe_dump(data, allow_unicode=True).encode()


# ---------------------------------------------------------------- the fuzz tests


@FUZZ
@given(data=byte_mutations())
def test_byte_mutations(workdir: Path, data: bytes) -> None:
    assert_contract(workdir / "bytes.yaml", data)


@FUZZ
@given(data=line_mutations())
def test_line_mutations(workdir: Path, data: bytes) -> None:
    assert_contract(workdir / "lines.yaml", data)


@FUZZ
@given(data=with_aliases())
def test_inserted_aliases(workdir: Path, data: bytes) -> None:
    assert_contract(workdir / "aliases.yaml", data)


@settings(FUZZ, max_examples=100)
@given(data=deep_nesting())
def test_deep_nesting(workdir: Path, data: bytes) -> None:
    assert_contract(workdir / "deep.yaml", data)


@settings(FUZZ, max_examples=60)
@given(data=huge_values())
def test_huge_values(workdir: Path, data: bytes) -> None:
    assert_contract(workdir / "huge.yaml", data)


@FUZZ
@given(data=wrong_types())
def test_wrong_types(workdir: Path, data: bytes) -> None:
    assert_contract(workdir / "types.yaml", data)


def test_every_seed_is_a_config() -> None:
    """The fuzzers start from every shipped config and example, all valid."""
    assert len(SEEDS) >= 10 and any(p.parent.name == "examples" for p in SEEDS)
    assert all(isinstance(d, dict) and "site" in d for d in SEED_DATA)


# ---------------------------------------------------------------- the classic bombs, in a limited process

#: the child's address space: a blow-up is a MemoryError (a traceback, exit 1), which fails the test
ADDRESS_SPACE = 1 << 30
#: "does not hang": far above the fraction of a second each takes
TIME_BOUND = 30.0


#: the child limits itself, runs the real command line, and says its peak memory (VmHWM: the high-water
#: mark of its own address space; ru_maxrss of a forked child would include the parent's)
LIMITED_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))

def peak():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    sys.stderr.write(f"peak-rss-kb {{kb}}\\n")

import atexit
atexit.register(peak)
sys.argv = ["chamber-bridge", "check", sys.argv[1]]
from bridge.cli.main import main
main()
"""


def run_limited(path: Path) -> tuple[int, str, float, float]:
    """``chamber-bridge check PATH`` in a child limited to 1 GB: (exit code, stderr, seconds, peak RSS in MB)."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", LIMITED_CHILD.format(limit=ADDRESS_SPACE), str(path)],
                            capture_output=True, text=True, timeout=TIME_BOUND, cwd=ROOT)
    seconds = time.monotonic() - start
    lines = result.stderr.splitlines()
    assert lines and lines[-1].startswith("peak-rss-kb "), result.stderr[-2000:]
    return result.returncode, "\n".join(lines[:-1]), seconds, int(lines[-1].split()[1]) / 1024


CLASSIC = {
    "alias bomb": alias_bomb(),
    "recursive alias": "site: &a [*a]\n",
    "100k-deep nesting": "site: x\nd: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "100k-deep mappings": "site: x\nd: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n",
    "1 MB scalar": "site: " + "x" * (MAX_CONFIG_BYTES - 20) + "\n",
    "1 MB sexagesimal": "site: x\nn: 1" + ":1" * ((MAX_CONFIG_BYTES - 20) // 2) + "\n",
    "over 1 MB": "site: x\n" + "a: b\n" * (MAX_CONFIG_BYTES // 5 + 10),
    "1 MB of keys": "site: x\n" + "".join(f"k{i}: {i}\n" for i in range(70_000)),
}


@pytest.mark.parametrize("name", list(CLASSIC))
def test_classic_bombs_end_with_exit_2_in_bounded_time_and_memory(tmp_path: Path, name: str,
                                                                   figures: Figures) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(CLASSIC[name])
    assert path.stat().st_size <= MAX_CONFIG_BYTES + 1_000_000
    code, stderr, seconds, rss_mb = run_limited(path)
    assert code == 2, f"exit {code} after {seconds:.1f} s: {stderr[-2000:]}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: "), lines
    assert "Traceback" not in stderr
    assert seconds < TIME_BOUND
    assert rss_mb < 200, f"{rss_mb:.0f} MB"
    figures.record(row=0, fault=f"config: {name}", bytes=path.stat().st_size, seconds=round(seconds, 2),
                   peak_rss_mb=round(rss_mb, 1), error=lines[0].removeprefix(f"{path}: ")[:120])
