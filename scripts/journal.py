#!/usr/bin/env python
"""Check or export the live runner's journal.

    python scripts/journal.py verify --journal live/journal.sqlite [--json]
    python scripts/journal.py export --journal live/journal.sqlite --format csv --output fills.csv

``verify`` exits 0 when the hash chain is intact, 1 when a row was edited, deleted or
reordered (it prints the table, seq and reason), 2 when the journal cannot be read.
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
    verify = commands.add_parser("verify", help="recompute the hash chain; exit 1 on tampering")
    verify.add_argument("--journal", required=True, help="path of the SQLite journal")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    export = commands.add_parser("export", help="write the journaled fills as CSV or FIXML")
    export.add_argument("--journal", required=True, help="path of the SQLite journal")
    export.add_argument("--format", choices=("csv", "fixml"), default="csv")
    export.add_argument("--output", required=True, help="file to write")
    export.add_argument("--account", default="", help="FIXML account (Acct)")
    args = parser.parse_args(argv)

    from mmats.live.journal import Journal

    try:
        with Journal(args.journal, create=False) as journal:
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
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        print(f"ok: {report.rows_checked} rows, head seq {report.head_seq} "
              f"hash {report.head_hash}")
    else:
        print(f"TAMPERED: {len(report.problems)} problem(s) in {args.journal}")
        for problem in report.problems:
            print(f"  table {problem.table} seq {problem.seq}: {problem.kind} — {problem.detail}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
