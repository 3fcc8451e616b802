"""The YAML config (docs/design.md section 8): typed models, bounded loading, the files it names, buses.

One import for everyone: ``from bridge.config import Config, load_config``. The parts:
``models`` (the sections as strict, frozen pydantic models), ``loading`` (reading a file within
hard bounds, every problem one line naming its key path), ``files`` (TLS files load, secrets
are private, checked where the service runs), ``secrets`` (reading a secret file within
bounds), ``buses`` (which instruments share one transport).
"""

from bridge.config.auto_runs import PRE_ROLL_MAX, AutoRunsConfig, render_name
from bridge.config.buses import SHARED_OWNER, bus_problems, group_by_bus, shared_transport_config, transport_owner
from bridge.config.channels import catalog
from bridge.config.files import check_files, file_problems, loose_permissions, secret_files
from bridge.config.loading import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_PROBLEMS,
    MAX_SCALAR,
    format_loc,
    key_lines,
    load_config,
    parse_config,
    problems_from,
)
from bridge.config.models import (
    BASELINE_INTERVAL,
    AtomscaleSinkConfig,
    BridgeSection,
    Config,
    InstrumentConfig,
    LocalSinkConfig,
    MqttConfig,
    SinkConfig,
    TlsConfig,
    UnitsConfig,
    UploaderSection,
)
from bridge.config.runs import RESUME_WITHIN, RunsConfig
from bridge.config.secrets import SECRET_MAX_BYTES, TLS_FILE_MAX_BYTES, read_secret, regular_file

__all__ = [
    "BASELINE_INTERVAL", "MAX_CONFIG_BYTES", "MAX_DEPTH", "MAX_NODES", "MAX_PROBLEMS", "MAX_SCALAR", "PRE_ROLL_MAX",
    "RESUME_WITHIN", "SECRET_MAX_BYTES", "SHARED_OWNER", "TLS_FILE_MAX_BYTES", "AtomscaleSinkConfig", "AutoRunsConfig",
    "BridgeSection", "Config", "InstrumentConfig", "LocalSinkConfig", "MqttConfig", "RunsConfig", "SinkConfig",
    "TlsConfig", "UnitsConfig", "UploaderSection", "bus_problems", "catalog", "check_files", "file_problems",
    "format_loc", "group_by_bus", "key_lines", "load_config", "loose_permissions", "parse_config", "problems_from",
    "read_secret", "regular_file", "render_name", "secret_files", "shared_transport_config", "transport_owner",
]
