"""Hostile config files (issue 11): each row of the report is a test, run through the real ``check``.

Every outcome is exit 0 or exit 2 with one line per problem naming the key or the line and
column; never a traceback, a hang or a blow-up. The random variants are in test_config_fuzz.py,
the live TLS broker in test_tls.py.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bridge.cli.main import cli
from bridge.config import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_SCALAR, MqttConfig, load_config
from bridge.errors import ConfigError
from bridge.wire.mqtt import make_client
from tests.helpers.cli import EXAMPLES, ROOT, run_cli
from tests.helpers.tls import Pki, make_pki


@dataclass(frozen=True)
class Checked:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


def run_check(path: Path, *args: str) -> Checked:
    """``chamber-bridge check PATH`` in this process (click's runner); fails the test on any traceback."""
    result = CliRunner().invoke(cli, ["check", *args, str(path)], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("check raised instead of reporting:\n" + "".join(
            traceback.format_exception(result.exception)))
    checked = Checked(result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in checked.stdout + checked.stderr
    return checked


def refused(path: Path, *args: str) -> str:
    """The one line ``check`` printed for a config with exactly one problem."""
    checked = run_check(path, *args)
    assert checked.code == 2, checked
    assert len(checked.lines) == 1, checked.lines
    line = checked.lines[0]
    assert line.startswith(f"{path}: "), line
    return line.removeprefix(f"{path}: ")


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def dump(tmp_path: Path, raw: dict[str, Any], name: str = "config.yaml") -> Path:
    return write(tmp_path, yaml.safe_dump(raw), name)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": ``width ** levels`` strings from a few hundred bytes."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]")
    return "site: x\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------- row 1: a driver option that made check spin


def test_an_exposure_code_out_of_range_is_one_line_not_a_hang(tmp_path: Path) -> None:
    """``exposure_times: {100: 0.01}`` in the IMPAC example made `check` loop at 100% CPU in the ordering of
    problems (a key error's path ends in pydantic's ``[key]``); now it names the key, in a real process."""
    text = (EXAMPLES / "impac.yaml").read_text()
    assert "exposure_times: {" in text
    start = text.index("exposure_times: {")
    text = text[:start] + "exposure_times: {100: 0.01}" + text[text.index("}", start) + 1:]
    path = write(tmp_path, text)
    result = run_cli("check", "--no-files", str(path), timeout=30)  # the hang this was: a timeout fails it
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: bridge.instruments[0].options.exposure_times: key 100: Input should be less than or equal to 99"]


# ---------------------------------------------------------------- row 2: YAML that blew up


BOMBS = {
    "alias bomb": (alias_bomb(), "keys and values once aliases are expanded"),
    "recursive alias": ("site: &a [*a]\n", "the alias *a is inside the node &a it names"),
    "recursive mapping alias": ("site: x\nm: &m {k: *m}\n", "the alias *m is inside the node &m it names"),
    "undefined alias": ("site: *nowhere\n", "the alias *nowhere names no anchor"),
    "deep flow nesting": ("site: x\nd: " + "[" * 100_000 + "]" * 100_000 + "\n", "nest"),
    "deep mapping nesting": ("site: x\nd: " + "{a: " * (MAX_DEPTH + 5) + "1" + "}" * (MAX_DEPTH + 5) + "\n",
                             f"nested more than {MAX_DEPTH} levels deep"),
    "deep block nesting": ("site: x\n" + "".join(" " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  x\n",
                           f"nested more than {MAX_DEPTH} levels deep"),
    "malformed timestamp tag": ("site: !!timestamp 2024-99-99\n", "the tag tag:yaml.org,2002:timestamp is not"),
    "python tag": ("site: !!python/object/apply:os.system ['true']\n", "tag:yaml.org,2002:python/object/apply"),
    "unknown tag": ("site: !vault x\n", "the tag !vault is not allowed"),
    "bad implicit date": ("site: x\nmqtt: {host: 2024-13-45}\n", "month must be in 1..12"),
    "huge integer": ("site: x\nmqtt: {port: " + "9" * 10_000 + "}\n", "digits"),
    "huge scalar": ("site: " + "x" * (MAX_CONFIG_BYTES - 100) + "\n", f"at most {MAX_SCALAR} are allowed"),
    "over 1 MB": ("site: x\n" + "#" * MAX_CONFIG_BYTES + "\n", f"the config is over {MAX_CONFIG_BYTES} bytes"),
    "two documents": ("site: x\n---\nsite: y\n", "expected a single document"),
    "not a mapping": ("- site\n", "the config must be a mapping"),
    "reserved site": ("site: uploader\n", "site 'uploader' is reserved"),
    "site with a slash": ("site: ../etc\n", "site must be 1-64 characters"),
    "control character in a path": ('site: x\nbridge: {state_dir: "a\\0b"}\n', "must not contain control"),
    "newline in a value": ('site: "a\\nb"\n', "site must be"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_hostile_yaml_is_one_line(tmp_path: Path, name: str) -> None:
    text, expected = BOMBS[name]
    line = refused(write(tmp_path, text))
    assert expected in line, line
    assert "\n" not in line and "\x00" not in line


def test_bytes_that_are_not_utf8_are_one_line(tmp_path: Path) -> None:
    line = refused(write(tmp_path, b"site: x\nmqtt: {host: \xff\xfe}\n"))
    assert line == "not UTF-8 text: line 2: byte 0xff"


def test_a_shared_transport_alias_is_still_fine(tmp_path: Path) -> None:
    """Aliases are bounded, not banned: the examples share one RS-485 line with ``&line`` / ``*line``."""
    assert "*rs485_line" in (EXAMPLES / "impac.yaml").read_text()
    checked = run_check(EXAMPLES / "impac.yaml", "--no-files")
    assert checked.code == 0, checked


def test_problems_are_capped_and_each_is_one_line(tmp_path: Path) -> None:
    raw = {"site": "x", **{f"unknown{i}": "a\nb" for i in range(200)}}
    checked = run_check(dump(tmp_path, raw))
    assert checked.code == 2
    assert len(checked.lines) == 51
    assert checked.lines[-1].endswith("... and 150 more problems")


# ---------------------------------------------------------------- row 3: TLS files (the live broker: test_tls.py)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(tmp_path: Path, **tls: Any) -> Path:
    return dump(tmp_path, {"site": "x", "mqtt": {"port": 8883, "tls": {k: str(v) for k, v in tls.items()}}})


def test_tls_files_that_load_pass_check(tmp_path: Path, pki: Pki) -> None:
    assert run_check(tls_config(tmp_path, ca_file=pki.ca)).code == 0
    assert run_check(tls_config(tmp_path, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)).code == 0
    encrypted = tls_config(tmp_path, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key_encrypted,
                           key_password_file=pki.passphrase_file)
    assert run_check(encrypted).code == 0


def test_tls_file_problems_are_one_line_naming_the_key(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing-ca.crt"
    assert refused(tls_config(tmp_path, ca_file=missing)) == (
        f"mqtt.tls.ca_file: cannot read {missing}: No such file or directory")
    assert refused(tls_config(tmp_path, ca_file=pki.client_key)).startswith(
        f"mqtt.tls.ca_file: cannot load {pki.client_key}: NO_CERTIFICATE_OR_CRL_FOUND")
    assert refused(tls_config(tmp_path, ca_file="/dev/zero")) == "mqtt.tls.ca_file: /dev/zero is not a regular file"
    assert refused(tls_config(tmp_path, ca_file=pki.ca, cert_file=pki.client_cert,
                              key_file=pki.client_key_encrypted)) == (
        f"mqtt.tls.key_file: {pki.client_key_encrypted} is encrypted; put its passphrase in a file (mode 600) "
        "and name it with mqtt.tls.key_password_file")
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not it\n")
    wrong.chmod(0o600)
    assert refused(tls_config(tmp_path, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key_encrypted,
                              key_password_file=wrong)).startswith(
        f"mqtt.tls.key_file: cannot load {pki.client_cert} with {pki.client_key_encrypted}: ")
    assert refused(tls_config(tmp_path, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.server_key)).startswith(
        f"mqtt.tls.key_file: cannot load {pki.client_cert} with {pki.server_key}: KEY_VALUES_MISMATCH")
    assert refused(tls_config(tmp_path, cert_file=pki.client_cert)) == (
        "mqtt.tls: cert_file and key_file go together (a client certificate and its key)")


def test_the_client_names_a_tls_problem_too_not_a_traceback(tmp_path: Path, pki: Pki) -> None:
    """`poll` and `upload` build their client with the same loader: a file that vanished after `check`
    is a ConfigError naming the key (the CLI's exit 2), not an ssl traceback."""
    config = MqttConfig.model_validate({"tls": {"ca_file": str(tmp_path / "gone.crt")}})
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: cannot read .*gone\.crt: No such file"):
        make_client(config, "test")
    config = MqttConfig.model_validate({"tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                                                "key_file": str(pki.client_key_encrypted)}})
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.key_file: .* is encrypted"):
        make_client(config, "test")


def test_the_pi_config_names_its_missing_ca_clearly() -> None:
    """configs/pi-mbe.yaml connects over TLS; where its CA is not installed, `check` says which file."""
    pi = ROOT / "configs" / "pi-mbe.yaml"
    ca = (load_config(pi).mqtt.tls or pytest.fail("pi-mbe.yaml has no mqtt.tls")).ca_file
    if ca is None or ca.exists():
        pytest.skip("pi-mbe.yaml names no CA file, or it is installed on this machine")
    checked = run_check(pi)
    assert checked.code == 2
    assert checked.lines == [f"{pi}: mqtt.tls.ca_file: cannot read {ca}: No such file or directory"]


# ---------------------------------------------------------------- row 4: secret files others can read


def secret(tmp_path: Path, name: str, mode: int, text: str = "s3cret\n") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def secrets_config(tmp_path: Path, pki: Pki, modes: dict[str, int], **top: Any) -> Path:
    password = secret(tmp_path, "mqtt_password", modes.get("mqtt.password_file", 0o600))
    api_key = secret(tmp_path, "api_key", modes.get("uploader.sink.api_key_file", 0o600))
    key = secret(tmp_path, "client.enc.key", modes.get("mqtt.tls.key_file", 0o600),
                 pki.client_key_encrypted.read_text())
    passphrase = secret(tmp_path, "client.pass", modes.get("mqtt.tls.key_password_file", 0o600),
                        pki.passphrase_file.read_text())
    return dump(tmp_path, {
        "site": "x", **top,
        "mqtt": {"username": "x", "password_file": str(password),
                 "tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(key),
                         "key_password_file": str(passphrase)}},
        "uploader": {"sink": {"kind": "atomscale", "endpoint": "https://127.0.0.1:9", "api_key_file": str(api_key)}},
    })


SECRET_KEYS = ("mqtt.password_file", "mqtt.tls.key_file", "mqtt.tls.key_password_file", "uploader.sink.api_key_file")


def test_private_secret_files_pass(tmp_path: Path, pki: Pki) -> None:
    assert run_check(secrets_config(tmp_path, pki, {})).code == 0


@pytest.mark.parametrize("key", SECRET_KEYS)
@pytest.mark.parametrize(("mode", "who"), [(0o666, "open to every user"), (0o604, "open to every user"),
                                           (0o620, "writable by its group")])
def test_a_secret_file_others_can_read_is_refused(tmp_path: Path, pki: Pki, key: str, mode: int, who: str) -> None:
    path = secrets_config(tmp_path, pki, {key: mode})
    line = refused(path)
    assert line.startswith(f"{key}: "), line
    assert f"is {who} (mode {mode:04o}); run chmod 600 " in line
    assert line.endswith("or set allow_loose_secret_permissions: true")


def test_allow_loose_secret_permissions_turns_the_refusal_into_a_warning(tmp_path: Path, pki: Pki) -> None:
    path = secrets_config(tmp_path, pki, {"mqtt.password_file": 0o644}, allow_loose_secret_permissions=True)
    result = run_cli("check", str(path))  # a real process: the warning goes through logging to stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: ok")
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1
    assert warnings[0].endswith("mqtt.password_file: "
                                f"{tmp_path / 'mqtt_password'} is open to every user (mode 0644); "
                                "accepted because allow_loose_secret_permissions is true")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another owner")
def test_group_read_is_accepted_only_on_a_file_root_owns(tmp_path: Path, pki: Pki) -> None:
    """``root:chamber-bridge 0640`` (deploy/pi) is root giving the service's group the secret; the same
    mode on a file the service's own user owns is a group nobody needed to give it to."""
    path = secrets_config(tmp_path, pki, {"mqtt.password_file": 0o640})
    assert run_check(path).code == 0
    os.chown(tmp_path / "mqtt_password", 65534, 0)
    assert "is readable by its group (mode 0640)" in refused(path)


def test_a_missing_secret_is_named_when_read_not_by_check(tmp_path: Path) -> None:
    """`check` runs where Docker secrets are not mounted (test_shipped_configs.py): only existing files are judged."""
    path = dump(tmp_path, {"site": "x", "mqtt": {"username": "x", "password_file": str(tmp_path / "none")}})
    assert run_check(path).code == 0
