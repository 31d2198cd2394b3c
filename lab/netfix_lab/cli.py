"""`netfix lab ...`: start and stop the test lab's nodes on this machine.

netfix loads this group through the `netfix.commands` entry point group (see
netfix.cli.Main), so the commands exist wherever netfix-lab is installed and nowhere else.
"""

from __future__ import annotations

import click

from netfix.cli import progress
from netfix.errors import NetfixError


@click.group()
def lab() -> None:
    """Real test nodes on this machine (root): network namespaces with their own sshd."""


VM_SSH_TIMEOUT_HELP = (
    "VM: seconds to wait for SSH from the new boot (default: the VM lab's own wait, 90 s "
    "under KVM, minutes under software emulation); a machine busy with other VMs may "
    "need more."
)


@lab.command("up")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1, 50))
@click.option("--vm", "vm", is_flag=True,
              help="Start the QEMU VM lab node instead (builds its image once).")
@click.option("--ssh-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help=VM_SSH_TIMEOUT_HELP)
def lab_up(nodes, vm, ssh_timeout) -> None:
    """Start N netns lab nodes and write an inventory for them (prints its path)."""
    if vm:
        from netfix_lab.vm import vm_up

        click.echo(str(vm_up(progress=progress, ssh_timeout=ssh_timeout)))
        return
    if ssh_timeout is not None:
        raise NetfixError("--ssh-timeout is for the VM lab node (--vm)")
    from netfix_lab.netns import lab_up as up

    path = up(nodes, progress=progress)
    click.echo(str(path))


@lab.command("reboot")
@click.option("--ssh-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help=VM_SSH_TIMEOUT_HELP)
def lab_reboot(ssh_timeout) -> None:
    """Reboot the VM lab node and wait until SSH answers from the new boot.

    A power cycle: a clean poweroff in the guest, then a fresh QEMU on the same disk. It
    proves persistence: what netfix applied must come back from its files at boot. The
    VM's directory is $NETFIX_VM_DIR (default /run/netfix-vm)."""
    from netfix_lab.vm import vm_reboot

    took = vm_reboot(progress=progress, ssh_timeout=ssh_timeout)
    click.echo(f"rebooted in {took:.0f} s")


@lab.command("down")
@click.option("--vm", "vm_only", is_flag=True,
              help="Only stop the VM lab node in $NETFIX_VM_DIR; leave netns lab nodes "
              "(which may belong to another run) alone.")
def lab_down(vm_only) -> None:
    """Stop every lab node and remove everything the lab made (also after a crash)."""
    from netfix_lab.vm import vm_down

    removed = vm_down(progress=progress)
    if not vm_only:
        from netfix_lab.netns import lab_down as down

        removed += down()
    for item in removed:
        click.echo(f"removed {item}", err=True)

