"""netfix as a pyinfra operation: `pyinfra inventory.py deploy.py` (add --dry to see the
plan of each host and change nothing; `-y` to apply without asking).

Each host gets the profile of its `netfix_profile` data, applied as one journaled netfix
transaction: `netfix history` / `netfix rollback -i inventory.py` see it like any other.
"""

from pyinfra import host

from netfix.pyinfra import netfix_profile

netfix_profile(name="netfix profile", profile=host.data.netfix_profile)
