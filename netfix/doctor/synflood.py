"""SYN floods and accept queues: `TcpExt` counters of /proc/net/netstat read twice
(ListenOverflows, ListenDrops: the accept queue was full; TCPReqQFullDoCookies: the SYN
queue was full and cookies were sent; TCPReqQFullDrop: it was full and SYNs were dropped)
and the kernel's "Possible SYN flooding on port" lines (not in a network namespace: the log
is the host's). Remedy: the `syn_flood` profile section (syncookies, larger backlogs) and,
when the SYNs come from outside, the NodePort firewall."""

from __future__ import annotations

import re

from netfix.doctor import Files, Finding, LogLine, Remedy, Sample, Severity
from netfix.doctor.parse import files

NAME = "synflood"
ONCE_FILES = {"sysctls": Files(tuple(f"/proc/sys/net/{k}" for k in (
    "ipv4/tcp_syncookies", "ipv4/tcp_max_syn_backlog", "core/somaxconn",
    "ipv4/tcp_synack_retries")))}
SAMPLE_FILES = {"netstat": Files(("/proc/net/netstat",), raw=True)}
CODES = {
    "synflood-syn-drops": "SYNs dropped because a listener's SYN queue was full "
                          "(TCPReqQFullDrop; syncookies off): new connections fail",
    "synflood-cookies": "SYN queue full, answered with SYN cookies (TCPReqQFullDoCookies): "
                        "a SYN flood or a burst larger than the backlog",
    "synflood-accept-overflow": "accept queue overflows (ListenOverflows, ListenDrops): the "
                                "application accepts too slowly or its backlog is too small",
    "synflood-log": "\"Possible SYN flooding on port\" in the kernel log (not read in a "
                    "network namespace)",
    "synflood-since-boot": "SYN/accept queue overflows counted since boot, none in the window",
}
GAUGES = {"drops_per_second": ("Connection attempts dropped per second in the window, by "
                               "counter", "source")}
COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDoCookies", "TCPReqQFullDrop")
LOG = re.compile(r"Possible SYN flooding on port (\S+?)\.? (Sending cookies|Dropping request)")
SYSCTL = {"ipv4/tcp_syncookies": "syncookies", "ipv4/tcp_max_syn_backlog": "max_syn_backlog",
          "core/somaxconn": "somaxconn", "ipv4/tcp_synack_retries": "synack_retries"}
BACKLOG_FLOOR = 4096  # what base.yaml already asks for
BACKLOG_CAP = 65535


def _netstat(text: str) -> dict[str, int]:
    """`TcpExt:` header and value lines of /proc/net/netstat -> {name: value}, by header
    name (the kernel adds counters over the years; never by position)."""
    out: dict[str, int] = {}
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("TcpExt:")]
    for names, values in zip(rows[::2], rows[1::2], strict=False):
        for n, v in zip(names, values, strict=False):
            if v.lstrip("-").isdigit():
                out[n] = int(v)
    return out


def _once(text: str) -> tuple[dict[str, int], list[tuple[str, int, int]]]:
    sysctls: dict[str, int] = {}
    listeners = []
    for path, value in files(text).items():
        key = SYSCTL.get(path.removeprefix("/proc/sys/net/"))
        if key and value.isdigit():
            sysctls[key] = int(value)
    for line in text.splitlines():
        w = line.split()
        # `ss -Hltn`: State Recv-Q Send-Q Local Peer (Send-Q of a listener: its backlog)
        if len(w) >= 5 and w[0] == "LISTEN" and w[1].isdigit() and w[2].isdigit():
            listeners.append((w[3], int(w[1]), int(w[2])))
    return sysctls, listeners


def _raise(current: int | None) -> int:
    return min(BACKLOG_CAP, max(BACKLOG_FLOOR * 2, 2 * (current or 0)))


FIREWALL = ("if the SYNs come from outside the cluster to NodePorts, restrict them with the "
            "profile's `firewall` section (NodePort allow-list)")
APP = ("the accept queue is min(the application's listen() backlog, somaxconn): raise the "
       "application's backlog too, or find why it accepts slowly")


def _remedy(sysctls: dict[str, int], evidence: str, cookies: bool) -> Remedy:
    prof: dict[str, int] = {}
    comments: dict[str, str] = {}
    if cookies and sysctls.get("syncookies", 1) == 0:
        prof["syncookies"] = 1
        comments["syn_flood.syncookies"] = (f"{evidence}; tcp_syncookies is 0: with 1 a full "
                                            "SYN queue answers with cookies instead of dropping")
    for field in ("max_syn_backlog", "somaxconn"):
        prof[field] = _raise(sysctls.get(field))
        comments[f"syn_flood.{field}"] = (f"{evidence}; {field} was {sysctls.get(field, '?')}: "
                                          "a larger queue absorbs the burst")
    if cookies and sysctls.get("synack_retries", 5) > 3:
        prof["synack_retries"] = 3
        comments["syn_flood.synack_retries"] = (f"{evidence}; half-open entries of spoofed "
                                                "SYNs leave the queue after ~15 s, not ~63 s")
    return Remedy({"syn_flood": prof}, comments, action=FIREWALL if cookies else APP)


def _log_lines(klog: list[LogLine]) -> dict[str, list[LogLine]]:
    out: dict[str, list[LogLine]] = {}
    for line in klog:
        m = LOG.search(line.message)
        if m:
            out.setdefault(m.group(1), []).append(line)
    return out


def detect(sample: Sample) -> list[Finding]:
    before = _netstat(sample.before.get(NAME, ""))
    after = _netstat(sample.after.get(NAME, "")) or before
    sysctls, listeners = _once(sample.once.get(NAME, ""))
    w = sample.window
    delta = {c: max(0, after.get(c, 0) - before.get(c, 0)) for c in COUNTERS} if w else {}
    total = {c: after.get(c, 0) for c in COUNTERS}
    small = sorted((b, addr) for addr, _, b in listeners)[:1]
    base_ev: dict[str, float | int | str] = {f"sysctl_{k}": v for k, v in sysctls.items()}
    if small:
        base_ev["smallest_backlog"], base_ev["smallest_backlog_listener"] = small[0]
    findings = []

    def rate(c: str) -> float:
        return round(delta[c] / w, 2) if w else 0.0

    def add(code: str, sev: Severity, counters: tuple[str, ...], summary: str, why: str,
            cookies: bool) -> None:
        ev: dict[str, float | int | str] = {"window_seconds": w}
        for c in counters:
            ev[f"{c}_delta"], ev[f"{c}_since_boot"] = delta[c], total[c]
        ev["drops_per_second"] = round(sum(rate(c) for c in counters), 2)
        ev.update(base_ev)
        short = ", ".join(f"{c} +{delta[c]}" for c in counters if delta[c])
        findings.append(Finding(code, sev, counters[0], f"{summary}: {short} in {w:g} s", why,
                                ev, _remedy(sysctls, f"{short} in {w:g} s", cookies),
                                now=True))

    if delta.get("TCPReqQFullDrop"):
        add("synflood-syn-drops", Severity.CRITICAL, ("TCPReqQFullDrop",),
            "SYNs dropped with the SYN queue full",
            "new connections to a listener are refused silently while its SYN queue is full "
            "(syncookies off): clients retry after 1, 3, 7 s and time out", True)
    if delta.get("TCPReqQFullDoCookies"):
        add("synflood-cookies", Severity.WARNING, ("TCPReqQFullDoCookies",),
            "SYN queue full, SYN cookies sent",
            "a SYN flood (or a burst larger than the listener's backlog) fills the SYN queue; "
            "cookie connections lose TCP options (window scaling, SACK) and the flood costs "
            "CPU", True)
    if delta.get("ListenOverflows") or delta.get("ListenDrops"):
        add("synflood-accept-overflow", Severity.WARNING, ("ListenOverflows", "ListenDrops"),
            "accept queue overflowing",
            "completed connections are dropped because the application does not accept() "
            "them fast enough or its backlog (min(listen backlog, somaxconn)) is too small: "
            "clients see timeouts and retransmits", False)
    if not any(delta.values()) and any(total.values()):
        findings.append(Finding(
            "synflood-since-boot", Severity.INFO, "tcp",
            "since boot: " + ", ".join(f"{c} {total[c]}" for c in COUNTERS if total[c])
            + (f"; none in the last {w:g} s" if w else ""),
            "queue overflows happened before; not now", {**{f"{c}_since_boot": total[c]
                                                            for c in COUNTERS}, **base_ev}))
    if not sample.netns:
        for port, lines in sorted(_log_lines(sample.klog).items()):
            last = lines[-1]
            recent = sample.uptime - last.uptime <= max(w, 0) + 60
            findings.append(Finding(
                "synflood-log", Severity.WARNING if recent else Severity.INFO, f"port {port}",
                f"kernel: Possible SYN flooding on port {port} ({len(lines)} line(s); the "
                "kernel prints it once per listener)",
                "the listener's SYN queue overflowed: a SYN flood or a burst beyond its "
                "backlog", {"lines": len(lines), "last_uptime": round(last.uptime, 3),
                            "port": port, **base_ev},
                _remedy(sysctls, f"kernel log: SYN flooding on port {port}", True),
                now=recent, last_seen=last.wall))
    return findings
