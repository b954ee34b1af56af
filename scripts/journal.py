#!/usr/bin/env python
"""Check or export the live runner's journal.

    python scripts/journal.py verify --journal live/journal.sqlite [--anchor PATH] [--json] [--strict]
    python scripts/journal.py export --journal live/journal.sqlite --format csv --output fills.csv

``verify`` recomputes the hash chain, checks every row's signature and compares the journal
with its anchor file (``<journal>.anchor`` unless ``--anchor`` names another). It exits 0
when nothing was tampered with, 1 when a row was edited, deleted, reordered, forged,
rewritten or the newest rows were cut off (it prints the table, seq and reason of each, the
first bad row first), 2 when the journal cannot be read, or is signed and its key cannot be
read (set MMATS_SECRETS_PASSPHRASE). Warnings (an unsigned journal, an anchor missing,
behind or damaged) are printed but exit 0, unless ``--strict``: then they exit 1.
Both commands read journals of the older, unsigned layout too.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmats.cli import fail  # noqa: E402
from mmats.errors import MMATSError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Verify or export an MMATS journal.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check the hash chain, the signatures and "
                                 "the anchor; exit 1 on tampering")
    verify.add_argument("--journal", required=True, help="path of the SQLite journal")
    verify.add_argument("--anchor", help="path of its anchor file (default: <journal>.anchor)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--strict", action="store_true",
                        help="exit 1 on warnings too: an unsigned journal, an anchor missing, "
                             "behind or damaged")
    export = commands.add_parser("export", help="write the journaled fills as CSV or FIXML")
    export.add_argument("--journal", required=True, help="path of the SQLite journal")
    export.add_argument("--format", choices=("csv", "fixml"), default="csv")
    export.add_argument("--output", required=True, help="file to write")
    export.add_argument("--account", default="", help="FIXML account (Acct)")
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
                print(f"wrote {path}")
                return 0
    except MMATSError as error:
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


if __name__ == "__main__":
    sys.exit(main())
