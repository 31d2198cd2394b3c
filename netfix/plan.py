"""Plan as data: Op (one reversible step), Change (one knob target), HostPlan, Plan."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netfix.errors import InputError

PLAN_VERSION = 2  # 2: host identity, profile path and sha256, re-derived ops

# Change.action values
UPDATE = "update"  # has ops to run
SKIP = "skip"  # differs but cannot be changed here (flags say why)
OK = "ok"  # already as desired

# Change.flags values
DISRUPTIVE = "disruptive"
NOT_SETTABLE = "not-settable"
SHADOWED = "shadowed"
OTHER_WRITER = "other-writer"


@dataclass
class Op:
    """One step the node runs. `old` is what the node must still hold (checked under the
    lock before anything changes); `new` is what gets written. Undo swaps them.

    kind "value": a /proc/sys or /sys file holding one value (whitespace-normalised text).
    kind "file": a whole file; old/new are base64 content, None meaning absent.
    kind "cmd": state behind a command (ethtool, nft, ip...): `read` is sh that prints the
    current state, `set` is sh that sets the state given as "$1"; `path` is a unique label.
    Both are built by knobs from validated values only, and stored in the journal so a
    rollback from another controller can run them.
    """

    kind: str
    path: str
    old: str | None
    new: str | None
    read: str | None = None
    set: str | None = None


@dataclass
class Change:
    knob: str
    target: str
    current: str | None
    desired: str | None
    action: str = UPDATE
    boot: str | None = None  # effective value at next boot after this plan is applied
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)


@dataclass
class HostPlan:
    host: str
    profile: str | None
    changes: list[Change] = field(default_factory=list)
    fingerprint: str = ""
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # address, SSH host key fingerprint and machine-id: a saved plan applies only there
    identity: dict[str, str] = field(default_factory=dict)
    profile_path: str | None = None  # resolved, so a plan made from ./x.yaml applies anywhere
    profile_sha256: str = ""  # of the merged profile: an edited profile makes the plan stale
    notices: list[str] = field(default_factory=list)  # e.g. an interrupted tx recovered

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action == UPDATE]

    @property
    def ops(self) -> list[Op]:
        return [op for c in self.pending for op in c.ops]


@dataclass
class Plan:
    hosts: list[HostPlan]
    created: float = field(default_factory=time.time)
    version: int = PLAN_VERSION

    @property
    def has_changes(self) -> bool:
        return any(h.pending for h in self.hosts)

    @property
    def has_errors(self) -> bool:
        return any(h.error for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from netfix.util import atomic_write

        atomic_write(Path(path), json.dumps(self.to_dict(), indent=2).encode() + b"\n")


def fingerprint(changes: list[Change]) -> str:
    """Hash of every current value the diff looked at, in sync or not: a saved plan is stale
    as soon as any of them moves, not only the ones it would change."""
    seen = sorted((c.knob, c.target, c.current or "") for c in changes)
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:16]


def load_plan(path: str | Path) -> Plan:
    """Read a saved plan as data, checked against its schema: a wrong shape is an error
    naming the file and the field, never a traceback. Nothing in it is run as it stands
    (engine.apply plans again and compares)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("no such plan file", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the plan: {e}", file=str(p)) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not a netfix plan (invalid JSON: {e.msg})", file=str(p),
                         line=e.lineno) from None
    if not isinstance(data, dict) or data.get("version") != PLAN_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise InputError(f"not a netfix plan of version {PLAN_VERSION} (found version "
                         f"{version!r}): make the plan again with this netfix", file=str(p))
    _validate(data, p)
    hosts = []
    for h in data["hosts"]:
        changes = [
            Change(**{**c, "ops": [Op(**o) for o in c.get("ops", [])]}) for c in h["changes"]
        ]
        hosts.append(HostPlan(**{**h, "changes": changes}))
    return Plan(hosts=hosts, created=data.get("created", 0.0))


def _validate(data: Any, path: Path) -> None:
    import jsonschema

    from netfix.profile import field_path

    schema = json.loads((Path(__file__).parent / "schema" / "plan.json").read_text())
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        raise InputError(f"not a valid netfix plan: {error.message}", file=str(path),
                         path=field_path(list(error.absolute_path)) or "(top level)")
