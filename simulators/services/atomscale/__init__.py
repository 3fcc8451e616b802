"""An emulator of the Atomscale HTTP API: the endpoints a timeseries stream uses, with faults.

Why it exists: the uploader must never lose or double a chunk, and the only way to show that is
to run the real client code over real HTTP against a server that can fail the way a cloud API
fails, and then look at exactly what it stored. The emulator also records every request, so the
contract test can run the official SDK (``atomscale`` 0.21.10) and the project's own sink against
it and compare what each sent.

It is a real HTTP/1.1 server (stdlib ``ThreadingHTTPServer``) on 127.0.0.1, state in memory.
``AtomscaleEmulator(...).start()`` serves on a free port (``.url``); ``stop()`` ends it.
``chamber-bridge simulate atomscale [--port P] [--tls DIR]`` runs one standalone.

Modules: :mod:`.emulator` (the server object: life, keys, faults, request log, admin),
:mod:`.api` (the API's state and endpoints), :mod:`.server` (HTTP and the faults on the wire),
:mod:`.faults`, :mod:`.records` (what is stored and logged), :mod:`.bodies` (checking request
bodies), :mod:`.tls`, :mod:`.remote` (driving an emulator in another process).

With ``tls=make_tls_files(directory)`` it serves HTTPS with a certificate for 127.0.0.1, ::1
and localhost signed by a throwaway CA made there (``openssl`` CLI): a client that trusts that CA
(``ca_file``) connects, any other fails verification, as with a private CA or a wrong endpoint.

Endpoints (JSON bodies; every one except ``GET /gateway/time`` needs header ``X-API-KEY`` holding
one of the valid keys, else 401):

===========================================================  ==========================================
``GET  /gateway/time``                                       ``{"receivedAtUnixMs", "transmittedAtUnixMs"}``
``GET  /physical_samples/``                                  ``[{"id", "name"}]``
``POST /physical_samples/ {"name"}``                         ``{"id", "name"}``; a name already taken
                                                             (trimmed, ASCII case-insensitive) is 409
                                                             ``{"detail": {"physical_sample_id"}}``
``GET  /tags/``, ``POST /tags/ {"name"}``                    as samples; a taken name is 400
``POST /tool-state/stream/initialize``                       ``{"stream_name", "synth_source_id"?,
                                                             "points_per_chunk", "project_id"}`` ->
                                                             ``{"data_id", "processed_data_id"}``
``POST /tags/data-items/ {"data_ids", "tag_ids"}``           attach tags (unknown ids: 404)
``POST /data_entries/physical_sample``                       ``{"data_ids", "physical_sample_id"}``
``POST /projects/<id>/configuration/tracking_samples``       ``{"physical_sample_id", "set_active"}``
``POST /tool-state/stream/chunk``                            ``{"data_id", "chunk_index", "channel_name",
                                                             "timestamps", "values", "units"?}``
``POST /tool-state/stream/chunk/multi``                      ``{"data_id", "chunk_index", "channels":
                                                             {name: {"timestamps", "values", "units"?}}}``
``POST /tool-state/stream/<data_id>/finalize``               no body; repeating it answers 200 again
===========================================================  ==========================================

Chunks are stored per (data_id, channel_name, chunk_index). Pushing a key again with the same
content is idempotent (counted in ``repeats``); with different content it is a ``conflict`` and
both versions are kept, so a client that doubles data shows up in :meth:`duplicates_stored`.
Chunks that arrive after their stream was finalized are stored and counted per stream.

Faults (:class:`Fault`; from Python with :meth:`AtomscaleEmulator.add_fault`, or from another
process with ``POST /_emulator/faults``), checked before the key and the route:

- ``http_5xx``: answer ``status`` (500, 502 or 503) without doing anything
- ``reset``: read the request, then drop the connection with a TCP reset, nothing done
- ``slow``: wait ``delay`` seconds, then handle the request normally (a client that timed out
  meanwhile finds the request applied all the same, as with a slow real server)
- ``rate_limit``: 429 with ``Retry-After: retry_after`` (seconds, or an HTTP date)
- ``unauthorized``: 401 whatever the key (and :meth:`AtomscaleEmulator.set_keys` rotates keys)
- ``forbidden``: 403 whatever the key (the key is valid but lacks a permission, until an admin grants it)
- ``lost_response``: apply the request, then drop the connection without answering
- ``drip``: apply the request, then send the answer (status line and headers too) one byte
  every ``delay`` seconds: each read a client makes gets a byte well within its read timeout,
  so only an overall deadline ends the exchange
- ``huge_body``: apply the request, then answer its status with a body of ``size`` bytes
  (default 100 MB; valid JSON ``{"pad": "xxx..."}``), streamed in pieces, never held in memory

Each fault applies to the next ``count`` matching requests, or to each with ``probability``
(drawn from a generator seeded by ``seed``), or to every one until cleared when neither is given;
``path_prefix`` limits it to paths starting with that prefix. The first matching fault wins.

Admin endpoints (no key, not logged, never faulted): ``GET /_emulator/state``, ``GET
/_emulator/requests``, ``POST /_emulator/faults`` (one fault object or ``{"faults": [...]}``;
appended), ``DELETE /_emulator/faults``, ``POST /_emulator/keys {"keys": [...]}``.
"""

from simulators.services.atomscale.emulator import DEFAULT_KEY, AtomscaleEmulator
from simulators.services.atomscale.faults import FAULT_KINDS, Fault
from simulators.services.atomscale.records import EmulatedStream, RequestRecord, StoredChunk, TrackingConfig
from simulators.services.atomscale.remote import RemoteControl
from simulators.services.atomscale.tls import TlsFiles, make_tls_files

__all__ = ["DEFAULT_KEY", "FAULT_KINDS", "AtomscaleEmulator", "EmulatedStream", "Fault", "RemoteControl",
           "RequestRecord", "StoredChunk", "TlsFiles", "TrackingConfig", "make_tls_files"]
