"""Counts the requests of a schemathesis run from its HAR report and the share answered 2xx.

Usage: python summary.py HAR_FILE LABEL MIN_SHARE
Prints one line; exits 1 when fewer than MIN_SHARE (0..1) of the answers were 2xx, since a
document or server that answers everything with 4xx tests nothing.
"""

import collections
import json
import sys


def main(har_file, label, min_share):
    with open(har_file, encoding="utf-8") as har:
        entries = json.load(har)["log"]["entries"]
    statuses = collections.Counter(entry["response"]["status"] for entry in entries)
    total = len(entries)
    success = sum(count for status, count in statuses.items() if 200 <= status < 300)
    share = success / total if total else 0.0
    by_status = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    print(f"schemathesis on {label}: {total} requests, {share:.1%} answered 2xx ({by_status})")
    if share < float(min_share):
        print(f"schemathesis on {label}: fewer than {float(min_share):.0%} of the answers were 2xx", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
