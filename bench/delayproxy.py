#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay to every byte, in both directions.

Stand-in for `tc qdisc add dev <veth> root netem delay <D>ms` on both ends of each lab
veth, for kernels without sch_netem (this machine has no kernel modules at all). It
listens on 127.0.0.1:<base + i> and forwards to the i-th target (a lab node's sshd);
whatever one side sends is handed to the other side D ms after it was read, in order, so
a round trip costs 2 x D more, as on a real link with D of delay each way.

The local accept is instant, so each connection waits one round trip (2 x D) before the
proxy connects to the node: that stands in for the TCP handshake a real path pays.

Bounded: it stops by itself after --max-seconds, or as soon as its parent process is gone,
and only ever connects to the targets given on its command line.

    delayproxy.py --delay-ms 50 --base-port 42000 10.251.0.11:22 10.251.0.12:22 ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import sys


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    """Copy reader to writer, each chunk delivered `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()


async def _handle(client_r, client_w, target: tuple[str, int], delay: float) -> None:
    _nodelay(client_w)
    node_w = None
    try:
        await asyncio.sleep(2 * delay)  # the TCP handshake's round trip
        node_r, node_w = await asyncio.open_connection(*target)
        _nodelay(node_w)
        await asyncio.gather(_pipe(client_r, node_w, delay), _pipe(node_r, client_w, delay))
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (client_w, node_w):
            if w is not None:
                w.close()


async def _main(args: argparse.Namespace) -> None:
    delay = args.delay_ms / 1000.0
    servers = []
    for i, spec in enumerate(args.targets):
        host, _, port = spec.rpartition(":")
        target = (host, int(port))
        servers.append(await asyncio.start_server(
            lambda r, w, t=target: _handle(r, w, t, delay), "127.0.0.1", args.base_port + i,
            reuse_address=True, backlog=256))
    print("ready", flush=True)
    parent = os.getppid()
    loop = asyncio.get_running_loop()
    end = loop.time() + args.max_seconds
    while loop.time() < end and os.getppid() == parent:
        await asyncio.sleep(0.2)
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each way")
    ap.add_argument("--base-port", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    ap.add_argument("targets", nargs="+", metavar="HOST:PORT")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(_main(args))
    finally:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"proxy cpu {ru.ru_utime + ru.ru_stime:.2f}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
