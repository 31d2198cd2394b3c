"""`netfix agent`: the on-node loop (netfix/agent.py) and the commands that put it on
nodes (netfix/agentdeploy.py: install, uninstall, manifests). Imported only when the
command runs, so plan and apply pay nothing for it."""

from __future__ import annotations

import re

import click

LISTEN = re.compile(r"(?P<addr>\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.-]*):(?P<port>[0-9]{1,5})")


def _listen(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    m = LISTEN.fullmatch(value)
    if not m or not 0 < int(m["port"]) < 65536:
        raise click.BadParameter(f"{value!r}: expected ADDR:PORT (0.0.0.0:9877, "
                                 "[::1]:9877, :9877)")
    return value


@click.group(invoke_without_command=True)
@click.option("--profile", "profile", metavar="NAME", help="The profile this node keeps.")
@click.option("--mode", type=click.Choice(["observe", "enforce"]), default="observe",
              show_default=True, help="observe only reports; enforce applies pending "
              "changes as journaled transactions.")
@click.option("--interval", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              metavar="SECONDS", help="Plan this often (and at once on link or kube-proxy "
              "events); enforce applies at most once per interval.")
@click.option("--listen", callback=_listen, metavar="ADDR:PORT",
              help="Serve /metrics and /healthz here.")
@click.option("--textfile", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the metrics to FILE (atomically) for node_exporter's "
              "textfile collector.")
@click.option("--allow-disruptive", is_flag=True, help="Also enforce ring, channel and "
              "MTU changes (they reset the link on many drivers).")
@click.option("--conflict-limit", type=click.IntRange(min=1), default=3, show_default=True,
              metavar="N", help="Stop enforcing a key set back by someone else N times...")
@click.option("--conflict-window", type=click.FloatRange(min=1.0), default=1800.0,
              show_default=True, metavar="SECONDS", help="...within this many seconds.")
@click.option("--doctor-every", type=click.FloatRange(min=0.0), default=300.0, show_default=True,
              metavar="SECONDS", help="Run the (read-only) doctor this often for its "
              "findings in the metrics; 0: never.")
@click.option("--node-name", metavar="NAME", help="The host label in logs and metrics "
              "(default: $NODE_NAME, else the hostname).")
@click.pass_context
def agent(ctx: click.Context, profile: str | None, mode: str, interval: float,
          listen: str | None, textfile: str | None, allow_disruptive: bool,
          conflict_limit: int, conflict_window: float, doctor_every: float,
          node_name: str | None) -> None:
    """Keep this node converged by itself (run on the node, as root).

    Without a subcommand: the loop. Every decision is one JSON line on stdout; SIGTERM or
    SIGINT stops it cleanly."""
    if ctx.invoked_subcommand is not None:
        return
    if not profile:
        raise click.UsageError("--profile NAME is required")
    from pathlib import Path

    from netfix import agent as loop
    from netfix.errors import NetfixError

    options = loop.Options(profile, loop.Mode(mode), interval, allow_disruptive,
                           conflict_limit, conflict_window,
                           Path(textfile) if textfile else None, doctor_every)
    try:
        code = loop.run(options, listen, node_name)
    except NetfixError as e:  # a bad profile, a port in use: before the loop starts
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot start the agent: {e}") from None
    ctx.exit(code)


# install, uninstall, manifests (netfix/agentdeploy.py imports only click at its top too).
from netfix.agentdeploy import install, manifests_cmd, uninstall  # noqa: E402

for _cmd in (install, uninstall, manifests_cmd):
    agent.add_command(_cmd)
