"""Verify or export the live runner's journal.

examples:
  mmats journal verify --journal live/journal.sqlite --json
  mmats journal verify --journal live/journal.sqlite --anchor /mnt/usb/journal.anchor --strict
  mmats journal export --journal live/journal.sqlite --format csv --output fills.csv --json

``verify`` recomputes the hash chain, checks every row's signature and compares the journal
with its anchor file (``<journal>.anchor`` unless ``--anchor`` names another). Warnings (an
unsigned journal, an anchor missing, behind or damaged) are printed but exit 0, unless
``--strict``. ``export`` writes the journaled fills as CSV or FIXML. Both read journals of
the older, unsigned layout too.

exit codes: 0 nothing was tampered with (export: written); 1 a row was edited, deleted,
reordered, forged, rewritten or the newest rows were cut off (the table, seq and reason of
each are printed, the first bad row first), or, with --strict, a warning; 2 usage or input
error (a journal that cannot be read, a signed journal whose key cannot be read — set
MMATS_SECRETS_PASSPHRASE —, an output file that cannot be written).
"""

import json

from mmats.cli import add_json_option, add_subcommand, command_parser, fail, print_json
from mmats.errors import MMATSError


def main(argv=None, prog="mmats journal") -> int:
    parser = command_parser(prog, __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = add_subcommand(parser, commands, "verify", "check the hash chain, the "
                            "signatures and the anchor; exit 1 on tampering")
    verify.add_argument("--journal", required=True, help="path of the SQLite journal")
    verify.add_argument("--anchor", help="path of its anchor file (default: <journal>.anchor)")
    add_json_option(verify)
    verify.add_argument("--strict", action="store_true",
                        help="exit 1 on warnings too: an unsigned journal, an anchor missing, "
                             "behind or damaged")
    export = add_subcommand(parser, commands, "export",
                            "write the journaled fills as CSV or FIXML")
    export.add_argument("--journal", required=True, help="path of the SQLite journal")
    export.add_argument("--format", choices=("csv", "fixml"), default="csv")
    export.add_argument("--output", required=True, help="file to write")
    export.add_argument("--account", default="", help="FIXML account (Acct)")
    add_json_option(export)
    args = parser.parse_args(argv)

    from mmats.live.journal import Journal

    try:
        anchor = getattr(args, "anchor", None)
        with Journal(args.journal, readonly=True, anchor=anchor) as journal:
            if args.command == "verify":
                report = journal.verify()
            else:
                from mmats.reports.exports import trades_to_csv, trades_to_fixml

                if args.format == "csv":
                    path = trades_to_csv(journal, args.output)
                else:
                    path = trades_to_fixml(journal, args.output, account=args.account)
                if args.json:
                    print_json({"journal": str(args.journal), "format": args.format,
                                "output": str(path)})
                else:
                    print(f"wrote {path}")
                return 0
    except (MMATSError, OSError) as error:
        return fail(error, 2)
    failed = not report.ok or (args.strict and bool(report.warnings))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 1 if failed else 0
    if report.ok:
        print(f"ok: {report.rows_checked} rows, head seq {report.head_seq} "
              f"hash {report.head_hash}, {'signed' if report.signed else 'UNSIGNED'}, "
              f"anchored up to seq {report.anchor_head_seq}")
    else:
        print(f"TAMPERED: {len(report.problems)} problem(s) in {args.journal}")
        for problem in report.problems:
            print(f"  table {problem.table} seq {problem.seq}: {problem.kind} — {problem.detail}")
    for warning in report.warnings:
        print(f"  warning: table {warning.table} seq {warning.seq}: {warning.kind} — "
              f"{warning.detail}")
    if report.ok and failed:
        print(f"FAILED under --strict: {len(report.warnings)} warning(s) in {args.journal}")
    return 1 if failed else 0

