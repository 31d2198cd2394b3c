"""netfix command line: parse arguments, call the library, render, set the exit code.

Exit codes: 0 success / nothing to do, 1 error (any host failed), 2 changes pending
(plan --detailed-exitcode).
"""

from __future__ import annotations

import sys

import click

from netfix import __version__
from netfix.errors import NetfixError

INVENTORY_HELP = ("Inventory file (netfix or Ansible YAML). Default: $NETFIX_INVENTORY, "
                  "else the local machine (@local).")
LIMIT_HELP = "Only these hosts: names, groups or globs, ',' or ':' separated; !pat excludes."


def inventory_options(f):
    f = click.option("-l", "--limit", metavar="PATTERN", help=LIMIT_HELP)(f)
    f = click.option("-i", "--inventory", metavar="FILE", help=INVENTORY_HELP)(f)
    return f


def progress(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


def select(inventory: str | None, limit: str | None):
    return select_grouped(inventory, limit)[0]


def select_grouped(inventory: str | None, limit: str | None):
    """The selected hosts, and every inventory group's full membership (so that a plan
    names a group only when all of its hosts, not only the selected ones, share a change)."""
    from netfix.inventory import load_inventory

    inv = load_inventory(inventory)
    names: dict[str, set[str]] = {}
    for h in inv.hosts.values():
        for g in h.groups:
            names.setdefault(g, set()).add(h.name)
    return inv.select(limit), names




class Bar:
    """One rich progress bar on a terminal for runs over a few hosts (hosts done / failed);
    the plain per-host lines of `progress` when stderr is piped, or for a few hosts."""

    def __init__(self, what: str, total: int, plain: bool = True, few: int = 3) -> None:
        self.plain = plain  # False: say nothing when there is no bar (apply's planning)
        self.bar = None
        self.failed = 0
        if sys.stderr.isatty() and total > few:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[failed]}"),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(what, total=total, failed="")

    def __enter__(self) -> Bar:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def __call__(self, msg: str) -> None:
        if self.bar is None:
            if self.plain:
                progress(msg)
            return
        # Messages are "host: status ..." (apply, rollback) or "host: N change(s)" (plan).
        from netfix.status import GOOD

        words = msg.split(": ", 1)[-1].split()
        good = bool(words) and (words[0] in GOOD or msg.endswith("change(s)"))
        if not good:
            self.failed += 1
            self.bar.console.print(f"  {msg}", markup=False, highlight=False)
        self.bar.update(self.task, advance=1,
                        failed=f"{self.failed} failed" if self.failed else "")


YES_HELP = "Do not ask for confirmation (needed when stdin is not a terminal)."


def confirm_or_refuse(yes: bool, what: str, alternative: str) -> None:
    """Before any node is contacted: a run nobody can answer for must say --yes."""
    if not yes and not sys.stdin.isatty():
        raise NetfixError(f"refusing to {what} without confirmation: stdin is not a terminal "
                          f"and --yes was not given. {alternative}")


def ask(question: str, cancelled: str) -> None:
    answer = click.prompt(f"{question}\n  Only 'yes' will be accepted", default="",
                          show_default=False, err=True)
    if answer.strip() != "yes":
        click.echo(cancelled, err=True)
        sys.exit(1)


# Entry point group for commands that other distributions add: netfix-lab (lab/) adds
# `netfix lab`, so the test lab is not part of the netfix wheel an operator installs.
COMMANDS_GROUP = "netfix.commands"


class Main(click.Group):
    """netfix's own commands, plus the groups in the `netfix.commands` entry points, looked
    up only for a name netfix does not have (or for help), so a run pays nothing for them."""

    _extra: dict | None = None

    def _extras(self) -> dict:
        if self._extra is None:
            from importlib.metadata import entry_points

            self._extra = {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)
                           if ep.name not in self.commands}
        return self._extra

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._extras()})

    def get_command(self, ctx: click.Context, cmd_name: str):
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in self._extras():
            ep = self._extras()[cmd_name]
            try:
                cmd = ep.load()
            except Exception as e:  # noqa: BLE001 - a broken add-on must not break netfix
                click.echo(f"netfix: warning: command {cmd_name!r} ({ep.value}) did not "
                           f"load: {type(e).__name__}: {e}", err=True)
                return None
            self.add_command(cmd, cmd_name)
        return cmd

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NetfixError as e:
            click.echo(f"netfix: error: {e}", err=True)
            sys.exit(1)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netfix")
def main() -> None:
    """Keep the network state of Kubernetes nodes where you declared it.

    \b
    netfix plan  -i inventory.yaml           what would change, per host and knob
    netfix apply --profile public-vds -i inv apply reversibly, journaled on each node
    netfix rollback -i inv                   undo the last transaction on each node
    netfix history -i inv                    transactions recorded on the nodes
    netfix lab up --nodes 3                  real test nodes here (with netfix-lab)
    """


@main.command()
@inventory_options
@click.option("-p", "--profile", metavar="NAME", help="Profile for every host (overrides the "
              "inventory's `profile:`). A name from the profile path or a file.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("-o", "--out", metavar="FILE", help="Save the plan (with a fingerprint of the "
              "facts it came from) for `netfix apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when nothing to do, 2 when changes are pending, 1 on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Also list knobs already in sync.")
@click.option("--diff", "show_diff", is_flag=True, help="After the table, a unified diff of "
              "every file netfix would write or remove and of the nftables table (in the "
              "node's own nft form); binary or large files are summarised.")
@click.option("--per-host", is_flag=True, help="Print every host on its own instead of "
              "grouping hosts whose changes are identical.")
@click.option("--explain", is_flag=True, help="Also explain why each key matters (the "
              "SYN-flood texts), as footnotes printed once. Notes about the node itself "
              "(shadowing file, other writer, refused value) are always footnoted.")
@click.option("--markdown", "md_file", metavar="FILE", help="Also write the plan as Markdown "
              "(grouped, diffs in fenced blocks, a <details> per host group) for a "
              "merge-request comment or $GITHUB_STEP_SUMMARY.")
def plan(inventory, limit, profile, as_json, out, detailed_exitcode, verbose, show_diff,
         per_host, explain, md_file) -> None:
    """Show what apply would change: per host and knob, current, desired, value at boot,
    and flags (not settable here, shadowed by another file, another writer, disruptive).

    Hosts whose changes are identical are printed once, under a compact host list
    (node[1-6,8-20]; a group name where a whole inventory group matches)."""
    from netfix import engine, render, review

    hosts, names = select_grouped(inventory, limit)
    with Bar("gathering", len(hosts)) as bar:  # piped: silent, as before
        result = engine.make_plan(hosts, profile, bar if sys.stderr.isatty() else None)
    if out:
        result.save(out)
    if md_file:
        from pathlib import Path

        from netfix.util import atomic_write

        groups = review.group_hosts(result, verbose, per_host)
        try:
            atomic_write(Path(md_file),
                         review.markdown(result, groups, names, explain).encode())
        except OSError as e:
            raise NetfixError(f"cannot write {md_file}: {e.strerror or e}") from e
    if as_json:
        click.echo(render.to_json(result))
    else:
        render.plan_table(result, verbose, diff=show_diff, per_host=per_host, explain=explain,
                          names=names)
        if out:
            click.echo(f"Plan saved to {out}; apply it with: netfix apply {out}")
    if result.has_errors:
        failed = ", ".join(h.host for h in result.hosts if h.error)
        click.echo(f"netfix: failed on: {failed}", err=True)
        sys.exit(1)
    if detailed_exitcode and result.has_changes:
        sys.exit(2)


def rollout_options(f):
    f = click.option("--max-fail", type=click.IntRange(min=0), metavar="N",
                     help="Stop starting new batches once more than N hosts failed.")(f)
    f = click.option("--serial", type=click.IntRange(min=1), metavar="N",
                     help="Work on N hosts at a time (default: all in parallel).")(f)
    return f


def finish(results, title: str, as_json: bool) -> None:
    from netfix import render

    if as_json:
        click.echo(render.to_json(results))
    else:
        render.results_table(results, title)
    if any(not r.ok for r in results):
        failed = ", ".join(r.host for r in results if not r.ok)
        click.echo(f"netfix: failed on: {failed}", err=True)
        sys.exit(1)


@main.command()
@click.argument("plan_file", required=False, metavar="[PLAN_FILE]")
@inventory_options
@click.option("-p", "--profile", metavar="NAME", help="Profile for every host.")
@rollout_options
@click.option("--confirm", "confirm_secs", type=click.IntRange(1, 86400), metavar="SECONDS",
              help="Commit-confirmed: each node reverts the transaction by itself after "
              "SECONDS unless `netfix confirm` (or --auto-confirm) disarms it first.")
@click.option("--auto-confirm", is_flag=True, help="With --confirm: confirm each host as soon "
              "as a new SSH connection to it succeeds after the apply.")
@click.option("--allow-disruptive", is_flag=True, help="Also make disruptive changes (rings, "
              "channels, MTU) on the interface carrying netfix's own SSH session; without it "
              "such a host is refused and left unchanged.")
@click.option("--diff", "show_diff", is_flag=True, help="Show the file and ruleset diffs "
              "with the plan before asking.")
@click.option("-y", "--yes", is_flag=True, help=YES_HELP + " A saved PLAN_FILE needs none.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def apply(plan_file, inventory, limit, profile, serial, max_fail, confirm_secs, auto_confirm,
          allow_disruptive, show_diff, yes, as_json) -> None:
    """Apply a profile (or a saved PLAN_FILE) to the hosts.

    Without PLAN_FILE, the plan is printed (grouped) and apply asks for `yes` on a
    terminal; --yes skips the question, and without a terminal --yes is required. A saved,
    reviewed plan (`netfix plan -o plan.json`) is applied without a question.

    Per host, one transaction: the node is locked, every value is checked to still be what
    the plan saw, the journal under /var/lib/netfix records every old value and file, then
    the changes are made and persisted. If any step fails, that host is put back as it was
    and reported; other hosts carry on. A saved plan is refused if a node changed since."""
    from netfix import engine, transport

    if auto_confirm and not confirm_secs:
        raise NetfixError("--auto-confirm needs --confirm SECONDS")
    options = engine.ApplyOptions(serial=serial, max_fail=max_fail, confirm_secs=confirm_secs,
                                  auto_confirm=auto_confirm, allow_disruptive=allow_disruptive,
                                  saved=bool(plan_file))
    if not plan_file:
        confirm_or_refuse(yes, "apply", "Review a saved plan (netfix plan -o plan.json, then "
                          "netfix apply plan.json), or pass --yes to apply what is planned now.")
    hosts, names = select_grouped(inventory, limit)
    # The plan's SSH connection to each node carries its transaction too (one handshake
    # per node); --confirm's proof still makes a new one.
    with transport.keep():
        _apply(hosts, names, plan_file, profile, options, show_diff, yes, as_json)


def _apply(hosts, names, plan_file, profile, options, show_diff, yes, as_json) -> None:
    from netfix import engine, render
    from netfix.plan import load_plan

    if plan_file:
        if profile:
            raise NetfixError("give either a saved plan or --profile, not both")
        the_plan = load_plan(plan_file)
        planned = {h.host for h in the_plan.hosts}
        hosts = [h for h in hosts if h.name in planned]
        if not hosts:
            raise NetfixError(f"none of the hosts in {plan_file} are in the inventory")
    else:
        with Bar("gathering", len(hosts), plain=False) as bar:
            the_plan = engine.make_plan(hosts, profile, bar)
        if not as_json or not yes:  # with --json the plan goes to stderr, results to stdout
            render.plan_table(the_plan, diff=show_diff, names=names, stderr=as_json)
        if not yes and the_plan.has_changes:
            ask("Apply these changes?", "Apply cancelled: nothing was changed.")
    click.echo(f"Applying to {len(hosts)} host(s)...", err=True)
    with Bar("applying", len(hosts)) as bar:
        results = engine.apply(hosts, the_plan, options, progress=bar)
    finish(results, "apply", as_json)


@main.command("confirm")
@inventory_options
@click.option("--tx", metavar="ID", help="Transaction to confirm (default: every unconfirmed "
              "one on each node).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def confirm_cmd(inventory, limit, tx, as_json) -> None:
    """Confirm transactions applied with --confirm: disarm each node's automatic revert.

    A node whose confirm window already ran out has reverted the transaction by itself;
    it is reported as `reverted` (exit 1), and `netfix history` shows when."""
    from netfix import engine

    results = engine.confirm(select(inventory, limit), tx, progress)
    finish(results, "confirm", as_json)


@main.command()
@inventory_options
@click.option("--tx", metavar="ID", help="Transaction to undo (default: the last applied one).")
@click.option("--force", is_flag=True, help="Restore even values changed since netfix wrote "
              "them (by hand or by another tool).")
@rollout_options
@click.option("-y", "--yes", is_flag=True, help=YES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def rollback(inventory, limit, tx, force, serial, max_fail, yes, as_json) -> None:
    """Undo a transaction from each node's own journal: live values and files are restored
    byte for byte, in reverse order; files netfix created are deleted. A value changed
    since netfix wrote it is not touched without --force (it is named instead).

    On a terminal it first lists the transaction each host would roll back and asks for
    `yes`; --yes skips that, and without a terminal --yes is required."""
    from netfix import engine

    confirm_or_refuse(yes, "roll back", "Pass --yes (after `netfix history` shows what each "
                      "node would undo).")
    hosts = select(inventory, limit)
    if not yes:
        show_rollback(hosts, tx)
        ask("Roll back these transactions?", "Rollback cancelled: nothing was changed.")
    with Bar("rolling back", len(hosts)) as bar:
        results = engine.rollback(hosts, tx, force, serial, max_fail, bar)
    finish(results, "rollback", as_json)


def show_rollback(hosts, tx: str | None) -> None:
    """What each host would roll back, read from its journal (read-only)."""
    from netfix import engine

    for host, found in engine.history(hosts):
        if isinstance(found, str):
            click.echo(f"{host.name}: ERROR {found}", err=True)
            continue
        try:
            t = engine._pick(found, tx)
        except NetfixError as e:
            click.echo(f"{host.name}: nothing to roll back ({e})", err=True)
            continue
        click.echo(f"{host.name}: roll back transaction {t.id} ({t.kind} of profile "
                   f"{t.profile}, {len(t.steps)} step(s), {t.status}, by "
                   f"{t.user}@{t.controller})", err=True)


@main.command()
@inventory_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def history(inventory, limit, as_json) -> None:
    """List the transactions recorded in each node's journal.

    A transaction found cut off half-way (status `applying`) is first undone under the
    node lock and shown as interrupted-restored. An unreadable journal file is listed with
    what to do about it, and makes the exit code 1."""
    from netfix import engine, render

    rows = engine.history(select(inventory, limit))
    if as_json:
        click.echo(render.to_json({h.name: found if isinstance(found, str) else [
            t.__dict__ | {"steps": len(t.steps)} for t in found.txs] + [
            u.__dict__ | {"unreadable": True, "advice": u.advice()} for u in found.unreadable]
            for h, found in rows}))
        for h, found in rows:
            for note in [] if isinstance(found, str) else found.notices:
                click.echo(f"netfix: {h.name}: recovery: {note}", err=True)
    else:
        render.history_table(rows)
    if any(isinstance(found, str) or found.unreadable for _, found in rows):
        sys.exit(1)


class DriftCommand(click.Command):
    """Usage errors exit 1 here, not click's 2: for drift, 2 tells CI "drift found", and a
    typo in a pipeline must not read as drift."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            e.exit_code = 1
            raise


@main.command(cls=DriftCommand)
@inventory_options
@click.option("-p", "--profile", metavar="NAME", help="Profile for every host (overrides the "
              "inventory's `profile:`).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema "
              "netfix-drift/v1, see docs/drift-report.md); one line per check with --watch.")
@click.option("--junit", "junit_file", metavar="FILE", help="Write a JUnit XML report: a test "
              "suite per host, a test case per host and knob target.")
@click.option("--prometheus", "prom_file", metavar="FILE", help="Write node_exporter textfile "
              "collector metrics (drift per host and knob, last check time, check errors).")
@click.option("--markdown", "md_file", metavar="FILE", help="Write a short Markdown summary "
              "(e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--watch", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Check again every SECONDS, rewriting the report files each time. Never "
              "applies anything.")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="With --watch: stop after N checks (exit code of the last one).")
@click.option("--diff", "show_diff", is_flag=True, help="After each host's table, a unified "
              "diff of every file (and the nft table) apply would write to bring it back.")
def drift(inventory, limit, profile, as_json, junit_file, prom_file, md_file, watch,
          count, show_diff) -> None:
    """Report where nodes drifted from their profile, reading each node once (read-only).

    \b
    Kinds: live (running value differs), persisted (file differs or missing: changes at
    next reboot), edited (a netfix file changed by hand), shadowed (a later sysctl.d file
    wins at boot), other-writer (kube-proxy will overwrite it), unconfirmed (a --confirm
    transaction never confirmed). Values not settable on a node are shown as info only.
    Exit codes: 0 no drift, 2 drift, 1 error (any host could not be checked)."""
    from netfix import drift as driftmod
    from netfix import render, report

    if count is not None and watch is None:
        raise NetfixError("--count needs --watch")
    hosts = select(inventory, limit)

    def emit(result: driftmod.DriftReport, n: int) -> None:
        report.write_reports(result, junit_file, prom_file, md_file)
        if as_json:
            click.echo(report.to_json(result, indent=None if watch else 2))
        else:
            render.drift_table(result, diff=show_diff)
        for h in result.hosts:
            if h.error:
                click.echo(f"netfix: drift check failed on {h.host}: {h.error}", err=True)
        if watch:
            click.echo(f"netfix: check {n}{f'/{count}' if count else ''}: "
                       f"{report.headline(result)}", err=True)

    show = progress if sys.stderr.isatty() else None
    if watch:
        try:
            last = driftmod.watch(hosts, profile, watch, count, emit, show)
        except KeyboardInterrupt:
            sys.exit(130)
    else:
        last = driftmod.check(hosts, profile, show)
        emit(last, 1)
    sys.exit(last.exit_code)


class DoctorCommand(DriftCommand):
    """`doctor --help` lists every detector and its finding codes, read from the modules."""

    def format_epilog(self, ctx, formatter) -> None:
        from netfix.doctor import detectors

        with formatter.section("Detectors and their finding codes"):
            for mod in detectors():
                formatter.write_text(f"{mod.NAME}:")
                with formatter.indentation():
                    formatter.write_dl(sorted(mod.CODES.items()))


@main.command(cls=DoctorCommand)
@inventory_options
@click.option("--window", type=click.FloatRange(0, 3600), default=5.0, show_default=True,
              metavar="SECONDS", help="Read the counters twice, SECONDS apart, in the same SSH "
              "session: a finding then says what is happening now (a rate). 0: since boot only.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema "
              "netfix-doctor/v1, see docs/doctor.md).")
@click.option("--junit", "junit_file", metavar="FILE", help="Write JUnit XML: a test case per "
              "host and detector, a failure per detector with findings at warning or above.")
@click.option("--prometheus", "prom_file", metavar="FILE", help="Write node_exporter textfile "
              "metrics: netfix_doctor_finding{code,severity,host} and the raw gauges.")
@click.option("--markdown", "md_file", metavar="FILE", help="Write a Markdown summary.")
@click.option("--fix-profile", "fix_file", metavar="FILE", help="Write the remedies of the "
              "knob-fixable findings as a profile extending each host's profile (one file per "
              "distinct remedy set; STEM.hosts.yaml beside it names which hosts get which); "
              "findings no knob fixes are listed with their action.")
@click.option("--probe-mtu", is_flag=True, help="Also ping (-M do) the inventory's other "
              "selected nodes at the full interface MTU, to find MTU black holes.")
@click.option("--trace-drops", type=click.FloatRange(0, 300), default=0.0, metavar="SECONDS",
              help="Also record the kernel's drop reasons (tracepoint skb:kfree_skb, kernels "
              ">= 5.17) for SECONDS, concurrently with the window, in the same SSH session: "
              "the one change doctor makes on a node, capped and always turned off again. "
              "Not in a network namespace (the tracepoint is the host's). 0: off.")
@click.option("-v", "--verbose", is_flag=True, help="Also show info findings, why each "
              "finding hurts, its evidence and action.")
def doctor(inventory, limit, window, as_json, junit_file, prom_file, md_file, fix_file,
           probe_mtu, trace_drops, verbose) -> None:
    """Find what is wrong with each node's network, say why, and write the remedy.

    One read-only SSH command per host, hosts in parallel: every detector's files and
    commands are read once, counters twice (--window apart). Findings have a stable code,
    a severity (critical, warning, info), the evidence as numbers, and a remedy: a profile
    fragment (--fix-profile) or an action for a person.

    \b
    Exit codes: 0 no finding at warning or above, 2 findings, 1 a host (or a detector on
    it) could not be checked."""
    from netfix.doctor import report as dreport
    from netfix.doctor import run as drun

    hosts = select(inventory, limit)
    probe = None
    if probe_mtu:
        from netfix.doctor import mtu as dmtu

        probe = dmtu.probe_targets(hosts)
    result = drun.run(hosts, window, progress if sys.stderr.isatty() else None, probe=probe,
                      trace=trace_drops)
    dreport.write_reports(result, junit_file, prom_file, md_file)
    if as_json:
        click.echo(dreport.to_json(result))
    else:
        dreport.table(result, verbose)
    for h in result.hosts:
        if h.error:
            click.echo(f"netfix: doctor could not check {h.host}: {h.error}", err=True)
        for err in h.detector_errors.values():
            click.echo(f"netfix: {h.host}: {err}", err=True)
    if fix_file:
        from netfix.doctor import fixprofile

        for line in fixprofile.write(result, fix_file):
            click.echo(line, err=True)
    sys.exit(result.exit_code)


@main.group()
def profiles() -> None:
    """List, show and validate profiles."""


@profiles.command("list")
def profiles_list() -> None:
    """Profiles found on the profile path ($NETFIX_PROFILE_PATH, ./profiles, ...)."""
    from netfix.profile import list_profiles

    for name, path, desc in list_profiles():
        click.echo(f"{name:20} {desc.strip().splitlines()[0] if desc else ''}  ({path})")


@profiles.command("show")
@click.argument("name")
def profiles_show(name) -> None:
    """The merged profile (extends resolved) with derived values for this machine."""
    import yaml

    from netfix.knobs.conntrack import auto_max, buckets_for
    from netfix.profile import load_profile

    prof = load_profile(name)
    data = dict(prof.data)
    ct = data.get("conntrack")
    if ct and ct.get("max") is not None:
        import os

        if ct["max"] == "auto":
            mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            value, why = auto_max(ct, os.cpu_count() or 1, mem)
            ct = {**ct, "max": f"auto ({why} = {value} on this machine)"}
        else:
            value = int(ct["max"])
        ct.setdefault("buckets", f"{buckets_for(value)} (derived: max/4)")
        data["conntrack"] = ct
    click.echo(f"# profile {prof.name}: {' -> '.join(prof.files)}")
    click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)


@profiles.command("validate")
@click.argument("files", nargs=-1, required=True)
def profiles_validate(files) -> None:
    """Check profile files: YAML syntax, schema, extends, the 4:1 conntrack rule."""
    from netfix.profile import validate_file

    for f in files:
        validate_file(f)
        click.echo(f"{f}: ok")


# The agent's group imports only click; its loop and deploy code load when they run.
from netfix.agentcli import agent  # noqa: E402

main.add_command(agent)

if __name__ == "__main__":
    main()
