"""Small shared helpers."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same dir, fsync, rename: a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def norm(value: str | None) -> str | None:
    """Kernel values compare by words: 'a\\tb  c' equals 'a b c'."""
    return None if value is None else " ".join(value.split())


@functools.lru_cache(maxsize=4096)
def sysctl_path(key: str) -> str:
    """net.ipv4.conf.eth0/100.rp_filter -> /proc/sys/net/ipv4/conf/eth0.100/rp_filter
    (sysctl(8) writes a literal dot in a name as '/')."""
    return "/proc/sys/" + "/".join(part.replace("/", ".") for part in key.split("."))


def normalize_key(key: str) -> str:
    """sysctl.d accepts 'net/ipv4/ip_forward' too; its first separator decides which one
    is the separator and which a literal dot."""
    key = key.strip().lstrip("-")
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return key


def plugin_modules(package: str, path: list[str], attr: str) -> tuple:
    """The modules of a plugin package (doctor detectors, writer models) that define
    `attr`, by module name; modules named `_x` are helpers, not plugins."""
    import importlib
    import pkgutil

    found = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            mod = importlib.import_module(f"{package}.{info.name}")
            if hasattr(mod, attr):
                found.append(mod)
    return tuple(found)

