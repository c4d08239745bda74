"""The duplicate commands: dupes (find, decide, act), undo, distinct."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .options import (
    chosen_format,
    counted,
    echo_csv,
    format_options,
    open_store_for,
    progressbar,
    shown,
    store_option,
    write_text,
)

CSV_COLUMNS = ["group", "kind", "keeper", "id", "path", "score_to_keeper", "keep", "reason", "size", "width", "height",
               "mtime", "missing"]


@click.command()
@click.option("--threshold", type=click.FloatRange(-1, 1, min_open=True), default=0.95, show_default=True,
              help="Least cosine similarity to a group's keeper that makes an image its near duplicate.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=2), help="Neighbours looked at per image.")
@click.option("--exact", is_flag=True, help="Only byte-identical files (the same content hash); no vectors are read.")
@click.option("--keep", "keep_rules", default=None, metavar="RULE[,RULE...]",
              help="Which copy to keep, rules in order, each breaking the ties of the one before: pixels, size, "
                   "oldest, newest (EXIF date, else mtime), shortest-path, format:heic,jpg,png, in:DIR  "
                   "[default: pixels,size,oldest].")
@click.option("--protect", multiple=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Never propose a file under DIR for removal (repeat for more).")
@click.option("--move-to", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Move every proposed file into DIR, keeping its path under the indexed folder.")
@click.option("--trash", is_flag=True, help="Send every proposed file to the operating system's trash instead.")
@click.option("--dry-run", is_flag=True, help="With --move-to or --trash: print the plan and stop.")
@click.option("--yes", is_flag=True, help="With --move-to or --trash: act without asking (needed when not on a terminal).")
@format_options
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a contact sheet: each group, its keeper first and badged.")
@store_option
def dupes(threshold, k, exact, keep_rules, protect, move_to, trash, dry_run, yes, as_json, as_csv, html, store):
    """Find groups of duplicate images, choose which copy to keep, and (if asked) move or trash the rest.

    Each group has one keeper, chosen by the --keep rules; an image is proposed for
    removal only when its own similarity to the keeper reaches the threshold, never
    through a chain of similar images. Exact groups hold byte-identical files. Nothing
    is ever deleted: --move-to and --trash write a journal first, re-check every file
    before moving it, and `lookalike undo` puts everything back. Without --yes they
    print the plan and ask on a terminal.
    """
    from ..dupes import actions
    from ..dupes.groups import Settings, find_groups
    from ..dupes.keeper import parse_rules, protect_folders

    fmt = chosen_format(as_json, as_csv)
    if move_to is not None and trash:
        raise click.UsageError("--move-to and --trash can't be used together: choose where the duplicates go")
    acting = move_to is not None or trash
    if (dry_run or yes) and not acting:
        raise click.UsageError(f"{'--dry-run' if dry_run else '--yes'} goes with --move-to DIR or --trash")
    settings = Settings(threshold, k, parse_rules(keep_rules), protect_folders(protect), exact)
    opened = open_store_for(store)
    planned = None
    if acting:  # a bad destination is one line before the long part; an action a crash cut short is settled
        actions.plan(opened, [], to=move_to, to_trash=trash, protect=settings.protect)
        for name in actions.settle(opened):
            click.echo(f"finished the interrupted action {name}: every file is at its source or its destination",
                       err=True)
    with progressbar(len(opened), "Comparing") as bar:
        seen = {"rows": 0}

        def progress(rows, total):
            bar.update(rows - seen["rows"])
            seen["rows"] = rows

        groups = find_groups(opened, settings, progress)
    if acting:
        planned = actions.plan(opened, groups, to=move_to, to_trash=trash, protect=settings.protect)
    _show_groups(groups, fmt)
    if html:
        from .contact_sheet import groups_sheet

        write_text(html, groups_sheet(groups))
        click.echo(f"contact sheet -> {html}", err=True)
    if planned is None:
        return
    where = "the trash" if trash else shown(str(move_to))
    if fmt is None:
        for item in planned:
            click.echo(f"plan: {shown(item.member.path)} -> {shown(item.dest) if item.dest else 'the trash'}")
    size = sum(p.member.size for p in planned)
    click.echo(f"plan: {'trash' if trash else 'move'} {len(planned)} files ({_bytes(size)}) to {where}", err=True)
    if not planned or dry_run:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("refusing to move files without --yes when stdin is not a terminal "
                                       "(--dry-run shows the plan)")
        click.confirm(f"{'Trash' if trash else 'Move'} {len(planned)} files to {where}?", abort=True, err=True)
    _act(opened, planned, where)


def _bytes(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def _act(store, planned, where: str) -> None:
    from ..dupes import actions

    started = time.perf_counter()
    with progressbar(len(planned), "Moving") as bar:
        outcome = actions.apply(store, planned, command=sys.argv, progress=bar.update)
    for path, why in outcome.skipped:
        click.echo(f"skipped {shown(path)}: {why}", err=True)
    took = time.perf_counter() - started
    click.echo(f"moved {len(outcome.moved)} files to {where} in {took:.1f}s, skipped {len(outcome.skipped)}; "
               f"journal {Path(outcome.journal).stem}: `lookalike undo` puts them back")


def _show_groups(groups, fmt) -> None:
    rows = [(n, g, m) for n, g in enumerate(groups, 1) for m in g.members]
    if fmt == "json":  # written a group at a time: a million members never sit in memory as dicts at once
        click.echo('{"groups": [', nl=False)
        for number, g in enumerate(groups):
            text = json.dumps({"kind": g.kind, "keeper": shown(g.keeper.path), "members": [_member_json(m) for m in g.members]})
            click.echo(("," if number else "") + "\n  " + text, nl=False)
        click.echo("\n]}")
    elif fmt == "csv":
        echo_csv(CSV_COLUMNS, [(n, g.kind, shown(g.keeper.path), *_member_json(m).values()) for n, g, m in rows])
    else:
        for number, group in enumerate(groups, 1):
            click.echo(f"group {number} ({group.kind}, {len(group.members)} images)")
            for m in group.members:
                action = "keep" if m.keep else "missing" if m.missing else "move"
                click.echo(f"  {action:<7} {m.score:.4f}  {shown(m.path)}  {m.reason}")
    exact = sum(g.kind == "exact" for g in groups)
    proposed = sum(len(g.proposed) for g in groups)
    click.echo(f"{counted(len(groups), 'group')} ({exact} exact, {len(groups) - exact} near): "
               f"{counted(proposed, 'file')} proposed", err=True)


def _member_json(m) -> dict:
    return {"id": m.id, "path": shown(m.path), "score_to_keeper": round(m.score, 6), "keep": m.keep, "reason": m.reason,
            "size": m.size, "width": m.width, "height": m.height, "mtime": m.mtime_ns / 1e9, "missing": m.missing}


@click.command()
@click.argument("journal", required=False)
@click.option("--list", "list_them", is_flag=True, help="List the actions on this store's files, newest last.")
@store_option
def undo(journal, list_them, store):
    """Put back every file the last `dupes --move-to` or `--trash` moved (or the action JOURNAL names).

    A file comes back only if it still has the bytes it left with and its old place is
    free; anything else is listed and left where it is. The store follows, without
    embedding anything again.
    """
    from ..dupes import journal as journals
    from ..dupes.undo import undo as run

    opened = open_store_for(store)
    if list_them:
        states = journals.journals(opened.directory)
        for state in states:
            header = state.header
            click.echo(f"{state.name}  {header.get('created', '')}  {header.get('kind', '?'):<5}  "
                       f"{len(state.done):>6} files  {state.status}")
        click.echo(f"{len(states)} actions", err=True)
        return
    outcome = run(opened, journal)
    for where, why in outcome.kept:
        click.echo(f"not restored {shown(where)}: {why}", err=True)
    click.echo(f"restored {len(outcome.restored)} files ({Path(outcome.journal).stem})")
    if outcome.reindex:
        click.echo("the store was made anew since that action: run `lookalike index` to embed them again", err=True)
    if outcome.kept:
        raise click.ClickException(f"{len(outcome.kept)} files could not be put back (listed above)")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--list", "list_them", is_flag=True, help="List every verdict, with the files that hold each content.")
@click.option("--forget", is_flag=True, help="Take the verdict back: PATHS may be grouped again.")
@store_option
def distinct(paths, list_them, forget, store):
    """Record that the images at PATHS are not duplicates of one another.

    `dupes` never groups them again, in the terminal or the web page. A verdict names the
    images' contents, so it survives renames, moves and re-indexing.
    """
    from ..dupes import verdicts

    opened = open_store_for(store, near=paths)
    if list_them:
        for v in verdicts.listed(opened):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.recorded)) if v.recorded else "?"
            a = ", ".join(shown(p) for p in v.paths_a) or f"(no file now: {v.a[:12]})"
            b = ", ".join(shown(p) for p in v.paths_b) or f"(no file now: {v.b[:12]})"
            click.echo(f"{when}  {a}  !=  {b}")
        return
    if len(paths) < 2:
        raise click.UsageError("give two or more images (or --list)")
    changed = verdicts.record(opened, [str(p) for p in paths], forget=forget)
    verb = "forgot" if forget else "recorded"
    click.echo(f"{verb} {changed} verdicts: {'they may be grouped again' if forget else 'never grouped again'}")


COMMANDS = (dupes, undo, distinct)
