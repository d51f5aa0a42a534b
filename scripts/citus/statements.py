#!/usr/bin/env python3
"""Runs every SQL statement of the Postgres store on a Citus coordinator, one at a time.

Reads the statements (`const NAME: &str = "..."` whose text is SQL) from the store's
sources (src/store/, less the SQLite backend), so the survey always covers the statements
the store really sends. Each one is prepared with the parameter types the store binds and
executed with sample values seven times (PostgreSQL may switch a prepared statement to a
generic plan from the sixth run on), then explained; all inside a
transaction that is rolled back, beside a sample conversation made in that transaction.
Prints, per statement, whether Citus runs it and how it plans it (one shard, every shard,
subplans, INSERT ... SELECT through the coordinator). Exits 1 if Citus refuses any.
Standard library only; talks to the database through psql.
"""

import argparse
import json
import pathlib
import re
import subprocess
import sys

OWNER = "'survey'"
SAMPLE = "'01890000-0000-7000-8000-00000000000a'::uuid"   # 4 messages, owned by OWNER
TARGET = "'01890000-0000-7000-8000-00000000000b'::uuid"   # empty, owned by OWNER
FRESH = "'01890000-0000-7000-8000-00000000000c'::uuid"    # not stored
MAX = "9223372036854775807"
RUNS = 7

SETUP = f"""
INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                           next_sequence, metadata)
VALUES ({SAMPLE}, {OWNER}, 'sample', now(), now(), 4, 4, '{{}}'),
       ({TARGET}, {OWNER}, 'target', now(), now(), 0, 0, '{{}}');
INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                      metadata, created_at)
VALUES ({SAMPLE}, 0, 'user', '{{"role":"user","content":"hello sample"}}', to_tsvector('simple', 'hello sample'), '{{}}', now()),
       ({SAMPLE}, 1, 'assistant', '{{"role":"assistant","content":"hi"}}', to_tsvector('simple', 'hi'), '{{}}', now()),
       ({SAMPLE}, 2, 'user', '{{"role":"user","content":"more"}}', to_tsvector('simple', 'more'), '{{}}', now()),
       ({SAMPLE}, 3, 'assistant', '{{"role":"assistant","content":"ok"}}', to_tsvector('simple', 'ok'), '{{}}', now());
"""

# The six message columns a turn binds, as MessageColumns does: two messages.
TURN_TYPES = ["text[]", "text[]", "text[]", "text[]", "jsonb[]", "jsonb[]"]
TURN_VALUES = [
    "ARRAY['user', 'assistant']",
    """ARRAY['{"role":"user","content":"q"}', '{"role":"assistant","content":"a"}']""",
    "ARRAY[NULL, NULL]::text[]",
    "ARRAY[NULL, NULL]::text[]",
    "ARRAY[NULL, NULL]::jsonb[]",
    "ARRAY['{}', '{}']::jsonb[]",
]

# Statements that set the cluster up once and cannot run again on it.
SET_UP_ONCE = {"DISTRIBUTE_CONVERSATIONS", "DISTRIBUTE_MESSAGES", "DISTRIBUTE_RESPONSES"}

# Per statement: the parameter types the store binds, and sample values for them.
SAMPLES = {
    "CREATE": (["uuid", "text", "text", "int8", "jsonb"] + TURN_TYPES,
               [FRESH, OWNER, "'title'", "2", "'{}'"] + TURN_VALUES),
    "APPEND": (["uuid", "text", "int8"] + TURN_TYPES, [SAMPLE, OWNER, "2"] + TURN_VALUES),
    "HISTORY": (["uuid", "text", "int8", "int8", "int8", "int8"],
                [SAMPLE, OWNER, MAX, "1", "2", "2"]),
    "LIST": (["text", "int8", "int8"], [OWNER, "50", "0"]),
    "COUNT": (["text"], [OWNER]),
    "SEARCH": (["text", "int8", "int8", "text"], [OWNER, "50", "0", "'hello'"]),
    "SEARCH_COUNT": (["text", "text"], [OWNER, "'hello'"]),
    "DETAIL": (["uuid", "text"], [SAMPLE, OWNER]),
    "PAGE_ASC": (["uuid", "text", "int8", "int8"], [SAMPLE, OWNER, "-1", "21"]),
    "PAGE_DESC": (["uuid", "text", "int8", "int8"], [SAMPLE, OWNER, MAX, "21"]),
    "UPDATE": (["uuid", "text", "text", "jsonb"], [SAMPLE, OWNER, "'renamed'", """'{"k":"v"}'"""]),
    "DELETE": (["uuid", "text"], [SAMPLE, OWNER]),
    "DELETE_MESSAGES": (["uuid"], [SAMPLE]),
    "FORK_SOURCE": (["uuid", "text"], [SAMPLE, OWNER]),
    "FORK_CONVERSATION": (["uuid", "text", "text", "int8", "int8", "jsonb"],
                          [FRESH, OWNER, "'sample'", "2", "2", "'{}'"]),
    "FORK_SPAN": (["uuid", "int8"], [SAMPLE, "1"]),
    "FORK_MESSAGES": (["uuid", "uuid", "int8"], [SAMPLE, TARGET, "1"]),
    "TRUNCATE_CONVERSATION": (["uuid", "text", "int8"], [SAMPLE, OWNER, "2"]),
    "TRUNCATE_LOCK": (["uuid", "text"], [SAMPLE, OWNER]),
    "OWNER_BATCH": (["text", "int8"], [OWNER, "500"]),
    "BY_ID_ASC": (["text", "uuid", "int8"], [OWNER, "'00000000-0000-0000-0000-000000000000'", "21"]),
    "BY_ID_DESC": (["text", "uuid", "int8"], [OWNER, "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "21"]),
    "DELETE_OWNED": (["uuid", "text"], [SAMPLE, OWNER]),
    "IDLE_BATCH": (["timestamptz", "int8"], ["now()", "500"]),
    "DELETE_IDLE": (["uuid", "timestamptz"], [SAMPLE, "now()"]),
    "HAS_CITUS": ([], []),
    "IS_DISTRIBUTED": (["text"], ["'messages'"]),
    "TRUNCATE_MESSAGES": (["uuid", "int8"], [SAMPLE, "2"]),
    "ITEM_SPAN": (["uuid", "int8"], [SAMPLE, "2"]),
    "DELETE_ITEM_MESSAGES": (["uuid", "int8[]"], [SAMPLE, "ARRAY[1, 2]::int8[]"]),
    "REWRITE_ITEM_MESSAGE": (["uuid", "int8", "text", "jsonb", "text"],
                             [SAMPLE, "1", """'{"role":"assistant","content":null}'""", "'[1]'",
                              "''"]),
    "ITEM_DELETED": (["uuid", "text", "int8"], [SAMPLE, OWNER, "1"]),
    "SEARCH_BY_ID_ASC": (["text", "uuid", "int8", "text"],
                         [OWNER, "'00000000-0000-0000-0000-000000000000'", "21", "'hello'"]),
    "SEARCH_BY_ID_DESC": (["text", "uuid", "int8", "text"],
                          [OWNER, "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "21", "'hello'"]),
    "RESPONSE_TIP": (["uuid", "text"], [SAMPLE, OWNER]),
    "INSERT_RESPONSE": (["uuid", "uuid", "text", "uuid", "int8", "int8", "json"],
                        [SAMPLE, FRESH, OWNER, SAMPLE, "2", "3", "'{}'"]),
    "SELECT_RESPONSE": (["uuid", "uuid", "text"], [SAMPLE, FRESH, OWNER]),
    "DELETE_RESPONSE": (["uuid", "uuid", "text"], [SAMPLE, FRESH, OWNER]),
}
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.I)


def statements(store):
    """(file, name, SQL) for every SQL string constant the Postgres store can send."""
    found = []
    for path in sorted(pathlib.Path(store).rglob("*.rs")):
        if "sqlite" in str(path.relative_to(store)):
            continue
        source = path.read_text(encoding="utf-8")
        for name, literal in re.findall(
                r'const\s+(\w+)\s*:\s*&str\s*=\s*"((?:[^"\\]|\\.)*)"\s*;', source, re.S):
            text = re.sub(r"\\\n\s*", "", literal)  # a Rust line continuation
            text = re.sub(r'\\(["\\])', r"\1", text).replace("\\n", "\n")
            if SQL_START.match(text):
                found.append((path.name, name, text.strip()))
    return found


def psql(port, script):
    return subprocess.run(
        ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
         "-p", str(port), "-U", "postgres", "-d", "postgres"],
        input=script, capture_output=True, text=True, timeout=120)


def describe(plan):
    """How Citus runs a plan, from EXPLAIN (FORMAT JSON): tasks, subplans, methods."""
    parts = []

    def walk(node):
        if isinstance(node, dict):
            query = node.get("Distributed Query")
            if isinstance(query, dict):
                for subplan in query.get("Subplans", []):
                    inner = describe(subplan.get("PlannedStmt", []))
                    parts.append("subplan: " + ("computed on the coordinator"
                                                if inner.startswith("on the coordinator alone")
                                                else inner))
                job = query.get("Job", {})
                if "Task Count" in job:
                    nodes = {t.get("Node") for t in job.get("Tasks", [])}
                    where = "the coordinator" if any("localhost" in (n or "") for n in nodes) \
                        else "one worker" if len(nodes) == 1 else f"{len(nodes)} nodes"
                    count = job["Task Count"]
                    parts.append(f"{count} task{'s' if count != 1 else ''}" +
                                 (f" (one shard, on {where})" if count == 1 else " (every shard)"))
                return
            if node.get("Custom Plan Provider") == "Citus INSERT ... SELECT":
                parts.append(f"INSERT ... SELECT: {node.get('INSERT/SELECT method', '?')}")
                walk(node.get("Select Query"))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return "; ".join(parts) or "on the coordinator alone (no distributed table)"


def survey(port, name, sql, sample):
    types, values = sample
    arguments = f"({', '.join(values)})" if values else ""
    declared = f"({', '.join(types)})" if types else ""
    script = "\n".join([
        "\\set VERBOSITY default",
        "BEGIN;",
        SETUP,
        "\\echo @@prepare",
        f"PREPARE probe {declared} AS {sql};",
        "\\o /dev/null",
        "SAVEPOINT probe;",
    ] + [
        # The first five runs get custom plans; from the sixth on, PostgreSQL may keep a
        # generic one, as it does for the store's prepared statements on a connection.
        line for run in range(1, RUNS + 1) for line in (
            f"\\echo @@execute (run {run} of {RUNS} of the prepared statement)",
            f"EXECUTE probe {arguments};",
            "ROLLBACK TO SAVEPOINT probe;",
        )
    ] + [
        "\\o",
        "\\echo @@explain",
        f"EXPLAIN (COSTS OFF, FORMAT JSON) EXECUTE probe {arguments};",
        "\\echo @@done",
        "ROLLBACK;",
    ])
    result = psql(port, script)
    output = result.stdout
    if "@@done" in output:
        plan = json.loads(output.split("@@explain", 1)[1].split("@@done", 1)[0])
        return True, describe(plan)
    step = re.findall(r"^@@(.*)$", output, re.M)[-1] if "@@" in output else "setup"
    if step == "explain":
        # It runs; only EXPLAIN EXECUTE cannot show it. The same statement with its
        # parameters written in as constants plans the same way, and EXPLAIN shows that.
        why = " ".join(result.stderr.split()).split("ERROR:", 1)[-1].strip()
        inlined = re.sub(r"\$(\d+)", lambda m: f"({values[int(m[1]) - 1]})::{types[int(m[1]) - 1]}",
                         sql)
        again = psql(port, "\n".join(["BEGIN;", SETUP,
                                      f"EXPLAIN (COSTS OFF, FORMAT JSON) {inlined};", "ROLLBACK;"]))
        if again.returncode == 0:
            return True, f"{describe(json.loads(again.stdout))} (EXPLAIN EXECUTE fails with" \
                         f" \"{why}\"; plan shown with the parameters as constants)"
        return True, f"runs, but EXPLAIN fails: {why}"
    error = " ".join(line.split(":", 2)[-1].strip() if line.startswith("psql:") else line.strip()
                     for line in result.stderr.strip().splitlines()
                     if not line.startswith(("CONTEXT", "LINE", " ", "\t")))
    return False, f"fails at {step}: {error}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=55432)
    parser.add_argument("--store", default="src/store", help="the store's source folder")
    args = parser.parse_args()

    refused, unsurveyed = [], []
    found = statements(args.store)
    width = max(len(f"{path}:{name}") for path, name, _ in found)
    print(f"-- the SQL of {args.store} (less SQLite's) on Citus: each statement prepared with the"
          f" store's parameter types, executed {RUNS} times, explained, rolled back")
    for path, name, sql in found:
        label = f"{path}:{name}"
        if name in SET_UP_ONCE:
            print(f"  {label:<{width}}  -      sets the cluster up once; ran when the proxy started")
            continue
        if name not in SAMPLES:
            print(f"  {label:<{width}}  ?      not surveyed: give it sample parameters in SAMPLES"
                  f" of {pathlib.Path(__file__).name}")
            unsurveyed.append(name)
            continue
        runs, how = survey(args.port, name, sql, SAMPLES[name])
        print(f"  {label:<{width}}  {'ok   ' if runs else 'FAILS'}  {how}")
        if not runs:
            refused.append(name)
    print(f"statements Citus refuses: {', '.join(refused) if refused else 'none'}")
    if unsurveyed:
        print(f"statements not surveyed: {', '.join(unsurveyed)}")
    return 1 if refused or unsurveyed else 0


if __name__ == "__main__":
    sys.exit(main())
