"""netfix's test lab: real target nodes on this machine (root only), kept out of the
netfix wheel an operator installs.

- ``netfix_lab.netns``: netns lab nodes (a network namespace with its own sshd each).
- ``netfix_lab.vm``: the QEMU VM lab node (a Debian guest: rings, host-global knobs, reboots).
- ``netfix_lab.util``: what both share (tool lookup, process liveness, log tails).
- ``netfix_lab.cli``: the ``netfix lab`` commands, found by netfix through the
  ``netfix.commands`` entry point group of this distribution (netfix-lab, ``lab/``).
"""
