"""Plan as data: Op (one reversible step), Change (one knob target), HostPlan, Plan."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from netfix.errors import InputError

PLAN_VERSION = 3  # 2: host identity, profile path and sha256, re-derived ops; 3: reasons

class Action(StrEnum):
    """Change.action: what the plan does with a target."""

    UPDATE = "update"  # has ops to run
    SKIP = "skip"  # differs but cannot be changed here (its reasons say why)
    OK = "ok"  # already as desired


class OpKind(StrEnum):
    VALUE = "value"  # a /proc/sys or /sys file holding one value
    FILE = "file"  # a whole file, base64; None: absent
    CMD = "cmd"  # state behind a command: `read` prints it, `set` sets "$1"


class Code(StrEnum):
    """Reason codes: why a change is flagged or skipped. Change.flags lists the codes of
    its reasons; code that decides (drift, apply's guards) reads codes, never notes."""

    DISRUPTIVE = "disruptive"  # resets the link on many drivers
    MANAGEMENT = "management"  # on the interface carrying netfix's SSH session
    NOT_SETTABLE = "not-settable"  # detail: read-only, absent, unsupported, no-ethtool, ...
    SHADOWED = "shadowed"  # detail: the file that sets the key later at boot
    OTHER_WRITER = "other-writer"  # detail: who (kube-proxy)
    ERROR = "error"  # a profile value this node cannot take
    WARNING = "warning"  # e.g. a NIC block that matched nothing
    INFO = "info"
    OVERLAY_MTU = "overlay-mtu"  # detail: the overlay device


class When(StrEnum):
    """Writer.when: the moment another program writes a target."""

    BOOT = "boot"  # systemd-sysctl / procps at boot, netfix's own boot unit
    START = "start"  # at the writer's (re)start: kube-proxy, TuneD, kubelet's check, a CNI agent
    PERIODIC = "periodic"  # on a timer or loop of its own
    LINK_ADD = "link-add"  # when the interface (re)appears: udev .link files, NetworkManager


UPDATE, SKIP, OK = Action.UPDATE, Action.SKIP, Action.OK
DISRUPTIVE, NOT_SETTABLE = Code.DISRUPTIVE, Code.NOT_SETTABLE
SHADOWED, OTHER_WRITER = Code.SHADOWED, Code.OTHER_WRITER


@dataclass
class Reason:
    """One machine-readable reason: `code` (a Code), `detail` (what exactly: a file, a
    writer, an interface, "read-only"), `message` (the sentence people read; also in the
    change's notes)."""

    code: str
    detail: str = ""
    message: str = ""

    def __str__(self) -> str:
        return f"{self.code}/{self.detail}" if self.detail else str(self.code)


@dataclass
class Writer:
    """One program that writes (or checks) a target besides netfix's apply: who, which
    version, the value it writes, when, and whether its value is the one the target ends
    with. Knobs fill Change.writers; drift and the table read them."""

    name: str  # kube-proxy, systemd-sysctl, procps, tuned, systemd-udevd, kubelet, cilium...
    when: str  # a When
    value: str | None = None  # what it writes; None: it only checks (kubelet) or unknown
    version: str = ""
    source: str = ""  # where netfix read this: a file, a flag, "pid 1234"
    wins: bool = False  # the target ends with this writer's value

    def __post_init__(self) -> None:
        self.when = When(self.when)


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

    kind: str  # an OpKind
    path: str
    old: str | None
    new: str | None
    read: str | None = None
    set: str | None = None

    def __post_init__(self) -> None:
        self.kind = OpKind(self.kind)  # a saved plan or journal with another kind is refused


@dataclass
class Change:
    knob: str
    target: str
    current: str | None
    desired: str | None
    action: str = UPDATE  # an Action
    boot: str | None = None  # effective value at next boot after this plan is applied
    flags: list[str] = field(default_factory=list)  # the codes of `reasons`
    notes: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    writers: list[Writer] = field(default_factory=list)  # other programs writing the target
    wins: str = ""  # who the target ends with: "netfix" or a Writer.name ("" not modelled)

    def __post_init__(self) -> None:
        self.action = Action(self.action)
        self.reasons = [r if isinstance(r, Reason) else Reason(**r) for r in self.reasons]
        self.writers = [w if isinstance(w, Writer) else Writer(**w) for w in self.writers]
        for code in self.flags:  # a bare flag is a reason without detail
            if self.reason(code) is None:
                self.reasons.append(Reason(code))
        self.flags = list(dict.fromkeys(str(r.code) for r in self.reasons))

    def flag(self, code: str, detail: str = "", message: str = "") -> None:
        """Add a reason (and its message to the notes, for people)."""
        self.reasons.append(Reason(code, detail, message))
        if code not in self.flags:
            self.flags.append(code)
        if message:
            self.notes.append(message)

    def unflag(self, *codes: str) -> None:
        self.reasons = [r for r in self.reasons if r.code not in codes]
        self.flags = [f for f in self.flags if f not in codes]

    def reason(self, code: str) -> Reason | None:
        return next((r for r in self.reasons if r.code == code), None)


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
            Change(**{**c, "ops": [Op(**o) for o in c.get("ops", [])],
                      "reasons": [Reason(**r) for r in c.get("reasons", [])],
                      "writers": [Writer(**w) for w in c.get("writers", [])]})
            for c in h["changes"]
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
