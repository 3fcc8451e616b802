"""Config loading: every problem of a file named by its key path, secrets never inline."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import Config, load_config, parse_config
from bridge.errors import ConfigError

GOOD = {
    "site": "chamber-a",
    "bridge": {
        "instruments": [
            {"name": "g", "driver": "pfeiffer_tpg", "interval": 0.5,
             "transport": {"kind": "serial", "port": "/dev/ttyUSB0"}, "options": {"channels": [1, 2]}},
        ]
    },
}


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return [str(p) for p in info.value.problems]


def test_good_config_has_defaults() -> None:
    cfg = parse_config(GOOD)
    assert isinstance(cfg, Config)
    assert cfg.mqtt.topic_prefix == "lab"
    assert cfg.mqtt.port == 1883
    assert cfg.uploader.points_per_chunk == 100
    assert cfg.uploader.sink.kind == "local"
    t = cfg.bridge.instruments[0].transport
    assert t.kind == "serial" and t.baudrate == 9600


def test_all_problems_reported_with_key_paths() -> None:
    raw = {
        "site": "chamber-a",
        "mqtt": {"port": "x"},
        "bridge": {"instruments": [
            {"name": "g", "driver": "pfeiffer_tpg",
             "transport": {"kind": "serial", "port": "/dev/x", "baudrate": 9601}},
            {"name": "h", "driver": "no_such", "transport": {"kind": "serial", "port": "/dev/y"}},
            {"name": "i", "driver": "pfeiffer_tpg", "transport": {"kind": "serial", "port": "/dev/z"},
             "options": {"channels": [1, 9]}, "colour": "red"},
        ]},
    }
    found = problems(raw)
    assert any(p.startswith("mqtt.port: ") for p in found)
    assert any(p.startswith("bridge.instruments[0].transport.baudrate: 9601 is not a standard") for p in found)
    assert any(p.startswith("bridge.instruments[1].driver: unknown driver 'no_such'") for p in found)
    assert "bridge.instruments[2].colour: unknown key" in found
    assert any(p.startswith("bridge.instruments[2].options.channels[1]: ") for p in found)
    assert len(found) == 5


def test_transport_kind_checks() -> None:
    raw = {"site": "a", "bridge": {"instruments": [
        {"name": "g", "driver": "pfeiffer_tpg", "transport": {"kind": "modbus_tcp", "host": "10.0.0.7"}},
        {"name": "h", "driver": "pfeiffer_tpg", "transport": {"kind": "carrier_pigeon"}},
        {"name": "k", "driver": "pfeiffer_tpg", "transport": {"port": "/dev/x"}},
    ]}}
    found = problems(raw)
    assert found[0].startswith("bridge.instruments[0].transport.kind: driver 'pfeiffer_tpg' does not work over")
    assert found[1].startswith("bridge.instruments[1].transport: unknown kind 'carrier_pigeon'")
    assert found[2] == "bridge.instruments[2].transport: missing key 'kind'"


def test_inline_secrets_are_refused() -> None:
    found = problems({"site": "a", "mqtt": {"password": "hunter2"},
                      "uploader": {"sink": {"kind": "atomscale", "endpoint": "https://x", "api_key": "k"}}})
    assert "mqtt.password: secrets are never written inline; use password_file or password_env" in found
    assert any(p.startswith("uploader.sink.api_key: secrets are never written inline") for p in found)
    assert all("hunter2" not in p for p in found)


def test_secrets_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "mqtt"
    secret.write_text("s3cret\n")
    cfg = parse_config({"site": "a", "mqtt": {"username": "bridge", "password_file": str(secret)}})
    assert cfg.mqtt.read_password() == "s3cret"
    monkeypatch.setenv("MQTT_PW", "fromenv")
    cfg = parse_config({"site": "a", "mqtt": {"username": "bridge", "password_env": "MQTT_PW"}})
    assert cfg.mqtt.read_password() == "fromenv"
    monkeypatch.delenv("MQTT_PW")
    with pytest.raises(ConfigError, match="MQTT_PW is not set"):
        cfg.mqtt.read_password()


def test_duplicate_instrument_names() -> None:
    inst = GOOD["bridge"]["instruments"][0]  # type: ignore[index]
    found = problems({"site": "a", "bridge": {"instruments": [inst, inst]}})
    assert found == ["bridge: instrument name 'g' is used twice"]


def test_yaml_errors_name_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("site: a\nbridge: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: line \d+, column \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_not_a_mapping() -> None:
    assert problems(["a"]) == ["the config must be a mapping of keys (site, mqtt, bridge, uploader)"]


def test_problem_order_ends_for_any_key_path() -> None:
    """Ordering by line walked up the key path; a path whose last part it could not drop (a mapping
    key's ``.[key]``) made it spin forever (issue 11). Every step must now shorten the path."""
    from bridge.config.loading import _order
    from bridge.errors import ConfigProblem

    paths = ["a.[key]", "a[", "]]", ".", "a..b", "[x]", "b[1].[key].c", "a.b[", "", "[", "a.b.[0]"]
    ordered = _order([ConfigProblem(p, "m") for p in paths], {"": 1, "a": 2, "b": 3, "a.b": 4})
    assert sorted(p.path for p in ordered) == sorted(paths)


def test_a_bad_mapping_key_is_named_as_a_key() -> None:
    raw = {"site": "a", "bridge": {"instruments": [
        {"name": "p", "driver": "impac", "transport": {"kind": "serial", "port": "/dev/x"},
         "options": {"exposure_times": {100: 0.01}}}]}}
    assert problems(raw) == [
        "bridge.instruments[0].options.exposure_times: key 100: Input should be less than or equal to 99"]


def test_reserved_and_odd_sites_are_refused() -> None:
    reserved = problems({"site": "uploader"})
    assert len(reserved) == 1 and reserved[0].startswith("site: site 'uploader' is reserved")
    assert problems({"site": "a/b"})[0].startswith("site: site must be 1-64 characters")


def test_merge_keys_and_shared_anchors_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("site: a\nbridge:\n  instruments:\n"
                    "    - &g {name: g, driver: pfeiffer_tpg, transport: &t {kind: serial, port: /dev/x}}\n"
                    "    - {<<: *g, name: h, transport: *t}\n")
    cfg = load_config(path)
    assert [i.name for i in cfg.bridge.instruments] == ["g", "h"]


def test_each_problem_is_one_printable_line() -> None:
    found = problems({"site": "a", "bridge": {"instruments": [
        {"name": "g", "driver": "no\nsuch\x1b[2J", "transport": {"kind": "serial", "port": "/dev/x"}}]}})
    assert len(found) == 1 and "\n" not in found[0] and "\x1b" not in found[0]
    assert "unknown driver 'no\\nsuch\\x1b[2J'" in found[0]


def test_tls_needs_a_key_with_its_certificate() -> None:
    assert problems({"site": "a", "mqtt": {"tls": {"key_password_file": "/x"}}}) == [
        "mqtt.tls: key_password_file is the passphrase of key_file, which is not set"]


def test_secret_reads_are_bounded(tmp_path: Path) -> None:
    from bridge.config import SECRET_MAX_BYTES, read_secret

    with pytest.raises(ConfigError, match=r"^k: /dev/zero is not a regular file$"):
        read_secret(Path("/dev/zero"), None, "k")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (SECRET_MAX_BYTES + 1))
    with pytest.raises(ConfigError, match=r"bytes; at most 65536 are expected"):
        read_secret(big, None, "k")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"^k: .*binary is not UTF-8 text$"):
        read_secret(binary, None, "k")


@pytest.mark.parametrize(("mode", "loose"), [(0o600, False), (0o400, False), (0o700, False), (0o644, True),
                                             (0o606, True), (0o620, True), (0o660, True), (0o601, True)])
def test_loose_permissions(tmp_path: Path, mode: int, loose: bool) -> None:
    import os

    from bridge.config import loose_permissions

    path = tmp_path / "s"
    path.write_text("x")
    path.chmod(mode)
    assert (loose_permissions(path) is not None) is loose
    assert loose_permissions(tmp_path / "missing") is None
    if os.geteuid() == 0:  # root owns it: group read is how root hands a secret to the service's group
        path.chmod(0o640)
        assert loose_permissions(path) is None


def test_units_identity_and_baseline_interval() -> None:
    raw = {**GOOD, "bridge": {"units": {"pressure": "MBAR", "temperature": "°C"}, "instruments": [
        {**GOOD["bridge"]["instruments"][0], "interval": "baseline",  # type: ignore[index]
         "identity": {"vendor": "Acme", "serial": "SN-1"}}]}}
    cfg = parse_config(raw)
    assert cfg.bridge.units.targets() == {"pressure": "mbar", "temperature": "degC"}
    inst = cfg.bridge.instruments[0]
    assert (inst.interval, inst.poll_interval) == ("baseline", None)
    assert inst.identity == {"vendor": "Acme", "serial": "SN-1"}
    assert parse_config(GOOD).bridge.instruments[0].poll_interval == 0.5
    assert parse_config(GOOD).bridge.units.targets() == {}


def test_bad_units_and_identities_are_named_by_key_path() -> None:
    gauge = GOOD["bridge"]["instruments"][0]  # type: ignore[index]
    found = problems({**GOOD, "bridge": {
        "units": {"pressure": "degC", "temperature": "C", "flow": "sccm"},
        "instruments": [
            {**gauge, "interval": "sometimes", "identity": {"vendor": "x\x1b[2J", "bad key": "y"}},
            {"name": "cell", "driver": "eurotherm", "transport": {"kind": "modbus_tcp", "host": "h"},
             "options": {"family": "2400", "units": "Celsius"}},
            {"name": "t", "driver": "serial_ascii", "transport": {"kind": "serial", "port": "/dev/ttyUSB3"},
             "options": {"queries": [{"name": "t", "command": "T?", "units": "arb"}]}},
        ]}})
    text = "\n".join(found)
    assert "bridge.units.pressure: " in text and "degC is not a pressure unit (use one of mbar, Pa" in text
    assert "bridge.units.temperature: " in text and "unit 'C' is not in the unit vocabulary (docs/units.md)" in text
    assert "bridge.units.flow: unknown key" in found
    assert any(p.startswith("bridge.instruments[0].interval") for p in found)
    assert any(p.startswith("bridge.instruments[0].identity.vendor") for p in found)
    assert any(p.startswith("bridge.instruments[0].identity") and "bad key" in p for p in found)
    assert any(p.startswith("bridge.instruments[1].options.units: ") and "'Celsius' is not in the unit vocabulary"
               in p for p in found)
    assert any(p.startswith("bridge.instruments[2].options.queries[0].units: ") for p in found)
