"""Kept for existing imports: netfix's fact now lives in netfix/pyinfra.py with the
pyinfra operations and transport.

    from netfix.pyinfra_fact import NetfixFacts, plan_from_facts
"""

from netfix.pyinfra import NetfixFacts, plan_from_facts

__all__ = ["NetfixFacts", "plan_from_facts"]
