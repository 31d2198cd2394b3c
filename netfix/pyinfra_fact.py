"""netfix's one-round-trip fact script as a pyinfra fact, for pyinfra deploys.

    from netfix.pyinfra_fact import NetfixFacts, plan_from_facts
    facts = host.get_fact(NetfixFacts, profile="public-vds")
    plan = plan_from_facts(host.name, "public-vds", facts)   # netfix's HostPlan, as data

netfix's own CLI does not go through pyinfra (see README, "Design notes"): importing
pyinfra's API costs more than a whole one-node plan's budget. This module is the bridge
for teams whose deploys already run on pyinfra.
"""

from __future__ import annotations

from pyinfra.api import FactBase

from netfix.engine import diff_facts, needs_for
from netfix.facts import Facts, build_script, parse
from netfix.plan import HostPlan
from netfix.profile import load_profile


class NetfixFacts(FactBase):
    """Everything the profile's knobs need, read by one `sh` command."""

    # The script is POSIX sh; the login shell would only add rc-file start-up time.
    shell_executable = "sh"

    def command(self, profile: str) -> str:
        return build_script(needs_for(load_profile(profile)))

    def process(self, output: list[str]) -> Facts:
        return parse("pyinfra", "\n".join(output))


def plan_from_facts(host: str, profile: str, facts: Facts) -> HostPlan:
    return diff_facts(host, load_profile(profile), facts)
