"""`netfix agent`: the on-node loop (netfix/agent.py) and the commands that put it on
nodes (netfix/agentdeploy.py: install, uninstall, manifests). Imported only when the
command runs, so plan and apply pay nothing for it."""

from __future__ import annotations

import click


@click.group(invoke_without_command=True)
@click.pass_context
def agent(ctx: click.Context) -> None:
    """Keep this node converged by itself (run on the node, as root).

    Without a subcommand: the loop (filled in by netfix/agent.py)."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("not built yet")


# install, uninstall, manifests (netfix/agentdeploy.py imports only click at its top too).
from netfix.agentdeploy import install, manifests_cmd, uninstall  # noqa: E402

for _cmd in (install, uninstall, manifests_cmd):
    agent.add_command(_cmd)
