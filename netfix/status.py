"""The outcome vocabularies: what a host's run ended as (HostStatus, reported by apply,
rollback and confirm), and what a transaction on the node is (TxStatus, the first word of
its status file). StrEnums: they print and serialise as the words operators see, and an
unknown word read from a node is an error here, not a silent new status."""

from __future__ import annotations

from enum import StrEnum


class TxStatus(StrEnum):
    """The first word of /var/lib/netfix/tx/<id>.status; the rest is a time and, for some,
    the id of the transaction that ended it ("rolled-back <id> <time>")."""

    APPLYING = "applying"  # under way, or cut off: the next run under the lock undoes it
    APPLIED = "applied"
    UNCONFIRMED = "applied-unconfirmed"  # in place, automatic revert armed (--confirm)
    REVERTED = "reverted-unconfirmed"  # the node reverted it: never confirmed in time
    ROLLED_BACK = "rolled-back"
    FAILED_RESTORED = "failed-restored"  # a step failed, every step made was undone
    FAILED_RESTORE_INCOMPLETE = "failed-restore-incomplete"
    INTERRUPTED = "interrupted-restored"  # found cut off, undone by a later run
    INTERRUPTED_INCOMPLETE = "interrupted-restore-incomplete"
    NEVER_STARTED = "never-started"  # a journal record without a status file

    @classmethod
    def of(cls, line: str) -> TxStatus | None:
        """The status of a status-file line, None for an empty or unknown one."""
        word = line.split()[0] if line.split() else ""
        try:
            return cls(word)
        except ValueError:
            return None


# What a transaction can be in force as (drift reports these as incomplete).
INCOMPLETE = (TxStatus.APPLYING, TxStatus.FAILED_RESTORE_INCOMPLETE,
              TxStatus.INTERRUPTED_INCOMPLETE)
# Undone already: a rollback of these has nothing to do.
UNDONE = (TxStatus.ROLLED_BACK, TxStatus.REVERTED, TxStatus.INTERRUPTED,
          TxStatus.FAILED_RESTORED)


class HostStatus(StrEnum):
    APPLIED = "applied"
    UNCONFIRMED = "applied-unconfirmed"
    NO_CHANGES = "no-changes"
    ROLLED_BACK = "rolled-back"
    CONFIRMED = "confirmed"
    NOTHING_TO_CONFIRM = "nothing-to-confirm"
    REVERTING = "reverting"  # the node is reverting by itself (confirm window ran out)
    REVERTED = "reverted"  # the node reverted it: never confirmed in time
    STALE = "stale"  # the node changed since the plan: nothing changed
    REFUSED = "refused"  # disruptive on the SSH interface, or a plan that does not match
    NOT_APPLIED = "not-applied"  # the script never ran: nothing changed
    CHANGED_SINCE = "changed-since"  # rollback: values moved since netfix wrote them
    FAILED_RESTORED = "failed-restored"
    FAILED_RESTORE_INCOMPLETE = "failed-restore-incomplete"
    RESTORE_INCOMPLETE = "restore-incomplete"
    INTERRUPTED = "interrupted-restored"
    INTERRUPTED_INCOMPLETE = "interrupted-restore-incomplete"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"  # the connection broke and reconnecting failed too
    SKIPPED = "skipped"  # not started: --max-fail reached
    ERROR = "error"

    @classmethod
    def of_tx(cls, status: TxStatus | None) -> HostStatus:
        """A transaction's end read back from the node, as the host's outcome."""
        try:
            return cls(str(status))
        except ValueError:
            return cls.UNKNOWN


# The outcomes that count as success (exit 0; the progress bar's "done").
GOOD = (HostStatus.APPLIED, HostStatus.NO_CHANGES, HostStatus.ROLLED_BACK,
        HostStatus.UNCONFIRMED, HostStatus.CONFIRMED, HostStatus.NOTHING_TO_CONFIRM)
