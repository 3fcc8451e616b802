"""``chamber-bridge upload-quarantine CONFIG``: what the uploader refused, for a person to inspect.

Reads the uploader's spool read-only (the uploader may be running): the counts per site and
reason, then the kept copies newest first. Every text is printed escaped (bridge.names.printable):
these are an attacker's bytes as much as a broken bridge's.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import click

from bridge.cli.common import fail, load
from bridge.names import printable
from bridge.uploader import quarantine
from bridge.uploader.spool import SPOOL_FILE


@click.command("upload-quarantine")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--limit", type=click.IntRange(0, quarantine.KEEP), default=20, show_default=True,
              help="Kept copies to list, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: counts and copies (payloads as hex).")
@click.pass_context
def upload_quarantine(ctx: click.Context, config: str, limit: int, as_json: bool) -> None:
    """List the messages the uploader refused: counts per site and reason, then the last copies."""
    cfg = load(ctx, config)
    path = cfg.uploader.state_dir / SPOOL_FILE
    if not path.exists():
        fail(f"no spool at {path}: has the uploader run with this config?")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            counts = quarantine.counts(db)
            copies = quarantine.listing(db, limit)
        finally:
            db.close()
    except sqlite3.Error as exc:
        fail(f"cannot read the quarantine in {path}: {exc} (a spool from before the quarantine holds none)")
    if as_json:
        click.echo(json.dumps({"counts": counts, "copies": [_jsonable(c) for c in copies]}, indent=2))
        return
    if not counts:
        click.echo("nothing quarantined")
        return
    for site, reasons in counts.items():
        click.echo(f"{printable(site, 80)}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items()))
    for copy in copies:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(copy["time"]))
        click.echo(f"{when}Z {printable(copy['site'], 80)} {copy['reason']} ({copy['size']} bytes on "
                   f"{printable(copy['topic'], 120)}): {printable(copy['detail'], 300)}")


def _jsonable(copy: dict[str, Any]) -> dict[str, Any]:
    return {**copy, "payload": (copy["payload"] or b"").hex()}
