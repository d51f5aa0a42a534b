#!/usr/bin/env python3
"""Reads the coordinator's CSV log for one application's statements.

Prints every error it logged for them, and how many queries Citus split into tasks on
several shards, both by the name of the store's statement (matched on its text, from the
store's sources). Exits 1 if any error was logged. Standard library only.
"""

import argparse
import collections
import csv
import pathlib
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from statements import statements  # noqa: E402

# Columns of PostgreSQL 15's csvlog.
SEVERITY, SQLSTATE, MESSAGE, DETAIL, QUERY, APPLICATION = 11, 12, 13, 14, 19, 22
MULTI_TASK = "multi-task query about to be executed"


def squeeze(text):
    return " ".join(text.split())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="the coordinator's postgresql.csv")
    parser.add_argument("--store", default="src/store", help="the store's source folder")
    parser.add_argument("--application", required=True, help="application_name to read")
    args = parser.parse_args()

    names = {squeeze(sql): name for _, name, sql in statements(args.store)}

    def name_of(query):
        return names.get(squeeze(query)) or f"(not a store statement) {squeeze(query)[:100]}"

    errors = collections.Counter()
    multi_task = collections.Counter()
    with open(args.log, newline="", encoding="utf-8", errors="replace") as log:
        for row in csv.reader(log):
            if len(row) <= APPLICATION or row[APPLICATION] != args.application:
                continue
            if row[SEVERITY] in ("ERROR", "FATAL", "PANIC"):
                detail = f" ({row[DETAIL]})" if row[DETAIL] else ""
                errors[(name_of(row[QUERY]), f"{row[SQLSTATE]} {row[MESSAGE]}{detail}")] += 1
            elif row[SEVERITY] == "LOG" and row[MESSAGE] == MULTI_TASK:
                multi_task[name_of(row[QUERY])] += 1

    print("queries Citus ran as several tasks (every shard), by statement:")
    for name, count in sorted(multi_task.items()):
        print(f"  {name}: {count}")
    if not multi_task:
        print("  none")
    print(f"errors for the proxy's statements: {sum(errors.values())}")
    for (name, error), count in errors.most_common():
        print(f"  x{count} {name}: ERROR {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
