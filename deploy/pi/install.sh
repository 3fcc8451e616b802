#!/usr/bin/env bash
# Installs chamber-bridge as a systemd service on a Raspberry Pi (Pi OS bookworm, Python 3.11):
#   - python3-venv from Debian, a virtual environment in /opt/chamber-bridge with the package
#     (the Pi side only: no server extra),
#   - the system user chamber-bridge in group dialout (serial adapters),
#   - /etc/chamber-bridge/config.yaml from configs/pi-mbe.yaml if there is none yet (MQTT over
#     TLS to the lab server's port 8883, checked against /etc/chamber-bridge/ca.crt),
#   - the udev rules (stable /dev/chamber/<name>) and the systemd unit, enabled.
# Idempotent: run it again after `git pull` to upgrade; an existing config and rules are kept, and a
# run that is open goes on across the restart (within bridge.runs.resume_within, docs/runs.md).
#
#   sudo bash deploy/pi/install.sh             # from a clone of the repository on the Pi
#   bash deploy/pi/install.sh --dry-run        # print what it would do, change nothing
#
# Options: --dry-run; --source SPEC (what pip installs, default: this repository);
#          --ca-file FILE (the lab CA certificate, installed as /etc/chamber-bridge/ca.crt:
#          secrets/tls-ca/ca.crt on the lab server, deploy/mosquitto/make-certs.sh);
#          --volatile-journal (keep the journal in RAM only: deploy/pi/README.md, SD-card wear).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prefix=/opt/chamber-bridge
user=chamber-bridge
config_dir=/etc/chamber-bridge
unit=/etc/systemd/system/chamber-bridge.service
rules=/etc/udev/rules.d/99-chamber-bridge.rules
journal_conf=/etc/systemd/journald.conf.d/chamber-bridge.conf

dry_run=0
source_spec="$repo"
volatile_journal=0
ca_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --source) source_spec="${2:?--source needs a pip requirement or path}"; shift ;;
    --ca-file) ca_file="${2:?--ca-file needs the lab CA certificate}"; shift ;;
    --volatile-journal) volatile_journal=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

step() { echo "== $*"; }
# run CMD...: do it, or with --dry-run print it
run() {
  if [ "$dry_run" -eq 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
have_user() { id -u "$user" >/dev/null 2>&1; }

if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo bash $0), or with --dry-run to see the steps" >&2
  exit 1
fi
[ "$dry_run" -eq 1 ] && echo "dry run: nothing is changed"

step "Debian packages: python3-venv"
if [ "$(dpkg-query -W -f='${Status}' python3-venv 2>/dev/null || true)" = "install ok installed" ]; then
  echo "   python3-venv is installed"
else
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
fi

step "system user $user in group dialout"
if have_user; then
  if [[ " $(id -nG "$user") " == *" dialout "* ]]; then
    echo "   $user exists and is in dialout"
  else
    run usermod --append --groups dialout "$user"
  fi
else
  run useradd --system --user-group --groups dialout --home-dir /var/lib/chamber-bridge --no-create-home \
    --shell /usr/sbin/nologin "$user"
fi

step "virtual environment $prefix"
if [ -x "$prefix/bin/python" ]; then
  echo "   $prefix exists"
else
  run python3 -m venv "$prefix"
fi
run "$prefix/bin/python" -m pip install --quiet --upgrade pip
run "$prefix/bin/python" -m pip install --quiet --upgrade "$source_spec"

step "config $config_dir/config.yaml"
run install -d -m 0750 -o root -g "$user" "$config_dir"
if [ -e "$config_dir/config.yaml" ]; then
  echo "   $config_dir/config.yaml exists: kept"
  fresh_config=0
else
  run install -m 0640 -o root -g "$user" "$repo/configs/pi-mbe.yaml" "$config_dir/config.yaml"
  fresh_config=1
fi
if [ -n "$ca_file" ]; then
  run install -m 0644 -o root -g root "$ca_file" "$config_dir/ca.crt"
elif [ ! -e "$config_dir/ca.crt" ]; then
  echo "   copy the lab CA certificate to $config_dir/ca.crt (or run again with --ca-file FILE)"
fi
if [ ! -e "$config_dir/mqtt_password" ]; then
  echo "   put this site's MQTT password in $config_dir/mqtt_password ($user:$user, mode 0600)"
fi

step "udev rules $rules"
if [ -e "$rules" ]; then
  echo "   $rules exists: kept (compare with $here/99-chamber-bridge.rules)"
else
  run install -m 0644 "$here/99-chamber-bridge.rules" "$rules"
fi
if command -v udevadm >/dev/null 2>&1; then
  run udevadm control --reload-rules
  run udevadm trigger --subsystem-match=tty --action=add
fi

if [ "$volatile_journal" -eq 1 ]; then
  step "journal in RAM only: $journal_conf"
  run install -d -m 0755 "$(dirname "$journal_conf")"
  if [ "$dry_run" -eq 1 ]; then
    echo "+ write $journal_conf: [Journal] Storage=volatile RuntimeMaxUse=64M"
  else
    printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\n' > "$journal_conf"
  fi
  run systemctl restart systemd-journald
fi

step "systemd unit $unit"
run install -m 0644 "$here/chamber-bridge.service" "$unit"
run systemctl daemon-reload
run systemctl enable chamber-bridge.service
if [ "${fresh_config:-0}" -eq 1 ]; then
  echo "   edit $config_dir/config.yaml, check it, then start:"
  echo "     sudo -u $user $prefix/bin/chamber-bridge check $config_dir/config.yaml"
  echo "     sudo -u $user $prefix/bin/chamber-bridge read $config_dir/config.yaml"
  echo "     sudo systemctl start chamber-bridge"
elif [ "$dry_run" -eq 1 ] || systemctl is-active --quiet chamber-bridge.service; then
  # an upgrade: the new code runs after a restart (the outbox keeps everything meanwhile); an
  # open run goes on when the bridge is back within bridge.runs.resume_within (default 900 s)
  echo "   restarting the bridge: an open run is kept (back within bridge.runs.resume_within, default 900 s)"
  run systemctl restart chamber-bridge.service
else
  run systemctl start chamber-bridge.service
fi
step "done"
