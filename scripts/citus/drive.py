#!/usr/bin/env python3
"""Drives a running proxy through the whole conversation store and management API.

For --duration seconds, --clients threads hold chat turns through
/v1/chat/completions (new and continued conversations, streamed and not, several owners,
and one conversation per owner that several threads continue at once), while another
thread walks conversations through the management API: create with seed messages, get,
message pages, rename, fork, truncate, search, owner isolation, delete. Then every
conversation is read back and compared with what was sent.

Every answer is checked (status, shape, contents), and so is every turn's end: a streamed
turn must end in [DONE] with no storage_failed chunk, a JSON turn must carry no
metadata.storage_failed. Prints a summary; exits 1 on any failure. Standard library only.
"""

import argparse
import collections
import concurrent.futures
import json
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

CHAT = "/v1/chat/completions"
API = "/v1/conversations"
# Every message the driver writes carries this word, so one search finds them all.
COMMON_WORD = "citusprobe"
REPLY = re.compile(r'^You sent (\d+) messages?; the last one said: "(.*)"\. \(I am', re.S)
def is_unix_seconds(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 1_500_000_000
SUMMARY_KEYS = {"id", "object", "title", "created_at", "updated_at", "message_count", "metadata"}


class Failure(Exception):
    """One check that did not hold."""


class Tally:
    """Counts shared by every thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.defaultdict(collections.Counter)
        self.turns = collections.Counter()
        self.failures = collections.Counter()
        self.examples = {}
        self.checks = collections.Counter()

    def request(self, endpoint, status):
        with self.lock:
            self.requests[endpoint][status] += 1

    def turn(self, *kinds):
        with self.lock:
            for kind in kinds:
                self.turns[kind] += 1

    def check(self, name):
        with self.lock:
            self.checks[name] += 1

    def fail(self, where, message):
        # Ids and numbers vary from one failure to the next; the kind is what to count.
        kind = f"{where}: " + re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "N", message)[:160]
        with self.lock:
            self.failures[kind] += 1
            self.examples.setdefault(kind, f"{where}: {message}"[:600])


TALLY = Tally()


def expect(condition, message):
    if not condition:
        raise Failure(message)


class Client:
    """HTTP calls to the proxy, as one owner (the bearer token)."""

    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, endpoint, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, answer, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer, raw = error.code, error.headers, error.read()
        TALLY.request(endpoint, status)
        return status, answer, raw

    def json(self, endpoint, method, path, body=None, want=200, headers=None):
        status, answer, raw = self.call(endpoint, method, path, body, headers)
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if status != want:
            code = value.get("error", {}).get("code") if isinstance(value, dict) else None
            raise Failure(f"{method} {path} answered {status} {code or raw[:200]!r}, not {want}")
        expect(answer.get("Content-Type", "").startswith("application/json"),
               f"{method} {path}: Content-Type {answer.get('Content-Type')!r}")
        expect(value is not None, f"{method} {path}: body is not JSON")
        return value

    def error(self, endpoint, method, path, status, code, body=None, headers=None):
        """Asserts an error answer in the OpenAI envelope."""
        value = self.json(endpoint, method, path, body, want=status, headers=headers)
        error = value.get("error") if isinstance(value, dict) else None
        expect(isinstance(error, dict) and error.get("code") == code,
               f"{method} {path}: error {value!r}, expected code {code}")
        expect(isinstance(error.get("message"), str) and "type" in error and "param" in error,
               f"{method} {path}: error envelope {error!r}")

    def turn(self, text, conversation=None, stream=False, seen=None):
        """One chat turn; returns (conversation id, how many messages the model saw).

        `seen` is how many messages the model must see (history + this one), when known.
        """
        endpoint = f"POST {CHAT} ({'stream' if stream else 'json'})"
        body = {"model": "demo", "messages": [{"role": "user", "content": text}], "stream": stream}
        if stream and random.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        headers = {"X-Conversation-ID": conversation} if conversation else {}
        status, answer, raw = self.call(endpoint, "POST", CHAT, body, headers)
        expect(status == 200, f"turn answered {status}: {raw[:300]!r}")
        header = answer.get("X-Conversation-ID")
        expect(header is not None, "turn: no X-Conversation-ID on the response")
        if conversation:
            expect(header == conversation, f"turn: X-Conversation-ID {header} for {conversation}")
        else:
            expect(uuid.UUID(header).version == 7, f"turn: {header} is not a UUIDv7")
        if stream:
            expect(answer.get("Content-Type", "").startswith("text/event-stream"),
                   f"turn: Content-Type {answer.get('Content-Type')!r}")
            reply = read_stream(raw)
        else:
            reply = read_completion(raw)
        found = REPLY.match(reply)
        expect(found is not None, f"turn: unexpected reply {reply[:200]!r}")
        expect(found.group(2) == text[:200], f"turn: the reply quotes {found.group(2)!r}, not {text!r}")
        count = int(found.group(1))
        if seen is not None:
            expect(count == seen, f"turn: the model saw {count} messages, not {seen}")
        TALLY.turn("turns", "streamed" if stream else "non-streamed",
                   "continued" if conversation else "new")
        return header, count


def read_stream(raw):
    """The assistant text of an SSE reply; fails on storage_failed or a missing [DONE]."""
    events = [event for event in re.split(r"\r\n\r\n|\n\n|\r\r", raw.decode()) if event.strip()]
    expect(events, "stream: no events")
    datas = []
    for event in events:
        lines = [line[5:].lstrip(" ") for line in re.split(r"\r\n|\n|\r", event)
                 if line.startswith("data:")]
        if lines:
            datas.append("\n".join(lines))
    expect(datas and datas[-1] == "[DONE]", f"stream: does not end in [DONE]: {datas[-1:]!r}")
    expect(datas.count("[DONE]") == 1, "stream: more than one [DONE]")
    text = []
    for data in datas[:-1]:
        chunk = json.loads(data)
        if chunk.get("metadata", {}).get("storage_failed"):
            TALLY.turn("storage_failed")
            raise Failure("stream: storage_failed chunk before [DONE]")
        expect(chunk.get("object") == "chat.completion.chunk", f"stream: chunk {data[:200]}")
        for choice in chunk.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def read_completion(raw):
    """The assistant text of a JSON reply; fails on metadata.storage_failed."""
    value = json.loads(raw)
    if isinstance(value.get("metadata"), dict) and value["metadata"].get("storage_failed"):
        TALLY.turn("storage_failed")
        raise Failure("json: metadata.storage_failed in the reply")
    expect(value.get("object") == "chat.completion", f"json: object {value.get('object')!r}")
    message = value["choices"][0]["message"]
    expect(message.get("role") == "assistant", f"json: message {message!r}")
    return message["content"]


def check_summary(summary, where):
    expect(isinstance(summary, dict) and set(summary) == SUMMARY_KEYS,
           f"{where}: summary keys {sorted(summary) if isinstance(summary, dict) else summary!r}")
    uuid.UUID(summary["id"])
    expect(is_unix_seconds(summary["created_at"]) and is_unix_seconds(summary["updated_at"]),
           f"{where}: timestamps {summary['created_at']!r} {summary['updated_at']!r}")
    expect(summary["updated_at"] >= summary["created_at"], f"{where}: updated_at before created_at")
    expect(isinstance(summary["message_count"], int) and summary["message_count"] >= 0,
           f"{where}: message_count {summary['message_count']!r}")
    expect(isinstance(summary["metadata"], dict), f"{where}: metadata {summary['metadata']!r}")
    expect(summary["title"] is None or isinstance(summary["title"], str), f"{where}: title")


def check_messages(messages, where):
    """Messages in order, their numbers increasing (with gaps where messages were truncated
    away: numbers are never handed out again), each with the added fields."""
    expect(isinstance(messages, list), f"{where}: messages is not a list")
    previous = -1
    for position, message in enumerate(messages):
        number = message.get("sequence_number")
        expect(isinstance(number, int) and number > previous,
               f"{where}: sequence {number!r} at position {position} after {previous}")
        previous = number if isinstance(number, int) else previous
        expect(message.get("role") in ("user", "assistant"), f"{where}: role {message.get('role')!r}")
        expect(is_unix_seconds(message.get("created_at")), f"{where}: created_at")
        expect(isinstance(message.get("metadata"), dict), f"{where}: metadata")


def strip(message):
    """A message as it was sent upstream, without the fields the API adds."""
    return {k: v for k, v in message.items() if k not in ("sequence_number", "created_at", "metadata")}


def get(client, conversation):
    detail = client.json("GET /v1/conversations/{id}", "GET", f"{API}/{conversation}")
    check_summary({k: v for k, v in detail.items() if k != "messages"}, "get")
    expect(detail["id"] == conversation, "get: another id")
    check_messages(detail["messages"], "get")
    expect(len(detail["messages"]) == detail["message_count"],
           f"get: {len(detail['messages'])} messages, message_count {detail['message_count']}")
    return detail


def pages(client, conversation, order, limit):
    """Every message through the cursor pages."""
    collected, after = [], None
    while True:
        query = {"limit": limit, "order": order}
        if after is not None:
            query["after"] = after
        page = client.json("GET /v1/conversations/{id}/messages", "GET",
                           f"{API}/{conversation}/messages?{urllib.parse.urlencode(query)}")
        expect(set(page) == {"data", "has_more"}, f"page: keys {sorted(page)}")
        expect(len(page["data"]) <= limit, "page: longer than its limit")
        collected.extend(page["data"])
        if not page["has_more"]:
            return collected
        expect(page["data"], "page: has_more on an empty page")
        after = page["data"][-1]["sequence_number"]


def search(client, words):
    return client.json("GET /v1/conversations?q=", "GET",
                       f"{API}?{urllib.parse.urlencode({'q': words, 'limit': 100})}")


def list_all(client):
    """Every conversation of the client's owner, through the offset pages."""
    summaries, offset, total = [], 0, None
    while True:
        page = client.json("GET /v1/conversations", "GET", f"{API}?limit=100&offset={offset}")
        expect(set(page) == {"conversations", "total", "limit", "offset"}, f"list: keys {sorted(page)}")
        expect(page["limit"] == 100 and page["offset"] == offset, "list: limit/offset echoed wrong")
        for summary in page["conversations"]:
            check_summary(summary, "list")
        summaries.extend(page["conversations"])
        total = page["total"]
        offset += 100
        if offset >= total or not page["conversations"]:
            return summaries, total


class Book:
    """What the driver expects in the store: per conversation, owner and messages."""

    def __init__(self):
        self.lock = threading.Lock()
        self.owner = {}
        self.turns = collections.defaultdict(int)   # completed turns, for shared conversations
        self.texts = {}                              # user texts in order, for exclusive ones
        self.shared = set()
        self.extra = {}                              # conversations the API made: message count

    def completed(self, conversation):
        with self.lock:
            return self.turns[conversation]


BOOK = Book()


def chat_client(base, tokens, index, deadline, shared):
    """One of the --clients threads: new and continued turns until the deadline."""
    token = tokens[index % len(tokens)]
    client = Client(base, token)
    mine = []
    turn = 0
    while time.monotonic() < deadline:
        turn += 1
        stream = turn % 2 == 0
        text = f"client {index} turn {turn} {COMMON_WORD} word{index}x{turn}"
        roll = random.random()
        try:
            if roll < 0.25 or not mine:
                conversation, _ = client.turn(text, stream=stream, seen=1)
                with BOOK.lock:
                    BOOK.owner[conversation] = token
                    BOOK.texts[conversation] = [text]
                mine.append(conversation)
            elif roll < 0.5:
                conversation = shared[token]
                before = BOOK.completed(conversation)
                _, seen = client.turn(text, conversation, stream=stream)
                # A turn that ended before this one began is in its history.
                expect(seen >= 2 * before + 1 and seen % 2 == 1,
                       f"shared turn: the model saw {seen} messages after {before} turns")
                with BOOK.lock:
                    BOOK.turns[conversation] += 1
            else:
                conversation = random.choice(mine)
                with BOOK.lock:
                    sent = len(BOOK.texts[conversation])
                client.turn(text, conversation, stream=stream, seen=2 * sent + 1)
                with BOOK.lock:
                    BOOK.texts[conversation].append(text)
        except Failure as failure:
            TALLY.fail("chat", str(failure))
        except Exception as error:  # a refused connection, a timeout, bad JSON
            TALLY.fail("chat", f"{type(error).__name__}: {error}")


def lifecycle(base, token, other, round_):
    """One conversation through every management endpoint, with exact expectations."""
    client, stranger = Client(base, token), Client(base, other)
    tag = f"tag{uuid.uuid4().hex[:12]}"
    seed = []
    for n in range(3):
        seed.append({"role": "user", "content": f"seed question {n} {tag} {COMMON_WORD}"})
        seed.append({"role": "assistant", "content": f"seed answer {n}"})
    titled = round_ % 2 == 0
    body = {"messages": seed, "metadata": {"source": "seed", "round": str(round_)}}
    if titled:
        body["title"] = f"Seeded {round_}"
    created = client.json("POST /v1/conversations", "POST", API, body, want=201)
    check_summary(created, "create")
    expect(created["message_count"] == 6, f"create: message_count {created['message_count']}")
    expect(created["title"] == (body["title"] if titled else seed[0]["content"]),
           f"create: title {created['title']!r}")
    expect(created["metadata"] == body["metadata"], "create: metadata")
    source = created["id"]
    with BOOK.lock:
        # Until the lifecycle ends, its count is not checked afterwards, only its presence.
        BOOK.owner[source] = token
        BOOK.extra[source] = None

    detail = get(client, source)
    expect([strip(m) for m in detail["messages"]] == seed, "get: seed messages differ")

    # A turn continues the seeded conversation: the model sees the seed.
    client.turn(f"follow up {tag} {COMMON_WORD}", source, stream=round_ % 2 == 1, seen=7)
    detail = get(client, source)
    expect(detail["message_count"] == 8, f"after a turn: message_count {detail['message_count']}")
    expect(detail["messages"][7]["metadata"].get("model") == "demo", "assistant metadata: model")
    full = detail["messages"]

    for order, limit in (("asc", 3), ("desc", 5)):
        paged = pages(client, source, order, limit)
        expected = full if order == "asc" else list(reversed(full))
        expect(paged == expected, f"pages ({order}, limit {limit}) differ from the conversation")
    TALLY.check("message pages equal the conversation")

    title = f"Renamed {round_} {tag}"
    renamed = client.json("PATCH /v1/conversations/{id}", "PATCH", f"{API}/{source}",
                          {"title": title, "metadata": {"status": "renamed"}})
    check_summary(renamed, "patch")
    expect(renamed["title"] == title and renamed["metadata"] == {"status": "renamed"},
           f"patch: {renamed!r}")
    expect(renamed["updated_at"] >= detail["updated_at"], "patch: updated_at went back")
    client.error("PATCH /v1/conversations/{id}", "PATCH", f"{API}/{source}", 400,
                 "invalid_request", {"title": ""})

    fork = client.json("POST /v1/conversations/{id}/fork", "POST", f"{API}/{source}/fork",
                       {"at_sequence": 3}, want=201)
    check_summary(fork, "fork")
    expect(fork["id"] != source and fork["message_count"] == 4, f"fork: {fork!r}")
    expect(fork["title"] == title, f"fork: title {fork['title']!r}")
    forked = get(client, fork["id"])
    expect([strip(m) for m in forked["messages"]] == [strip(m) for m in full[:4]],
           "fork: messages differ from the source's first four")
    client.error("POST /v1/conversations/{id}/fork", "POST", f"{API}/{source}/fork", 400,
                 "invalid_request", {"at_sequence": 8})
    with BOOK.lock:
        BOOK.owner[fork["id"]] = token
        BOOK.extra[fork["id"]] = 4

    found = search(client, tag)
    expect({c["id"] for c in found["conversations"]} == {source, fork["id"]} and found["total"] == 2,
           f"search {tag}: {[c['id'] for c in found['conversations']]} total {found['total']}")
    expect(search(stranger, tag)["total"] == 0, "search: another owner finds the conversation")
    TALLY.check("search finds exactly the conversations holding a word")

    # Truncate: drop messages 4.. (the follow-up turn and the seed's last pair).
    remaining = 8
    try:
        cut = client.json("DELETE /v1/conversations/{id}/messages", "DELETE",
                          f"{API}/{source}/messages?from_sequence=4")
        expect(cut == {"id": source, "deleted_messages": 4}, f"truncate: {cut!r}")
        remaining = 4
        nothing = client.json("DELETE /v1/conversations/{id}/messages", "DELETE",
                              f"{API}/{source}/messages?from_sequence=4")
        expect(nothing == {"id": source, "deleted_messages": 0}, f"truncate again: {nothing!r}")
        TALLY.check("truncate drops the tail, then nothing")
    except Failure as failure:
        TALLY.fail("truncate", str(failure))
    detail = get(client, source)
    expect(detail["message_count"] == remaining,
           f"after truncate: message_count {detail['message_count']}, not {remaining}")
    expect([strip(m) for m in detail["messages"]] == [strip(m) for m in full[:remaining]],
           "after truncate: messages differ")
    # The next turn continues right after the cut.
    client.turn(f"after the cut {tag} {COMMON_WORD}", source, seen=remaining + 1)
    detail = get(client, source)
    expect(detail["message_count"] == remaining + 2, "after truncate and a turn: message_count")

    # Owner isolation: the other owner gets 404 everywhere, and the conversation is untouched.
    for endpoint, method, path, body in (
        ("GET /v1/conversations/{id}", "GET", f"{API}/{source}", None),
        ("GET /v1/conversations/{id}/messages", "GET", f"{API}/{source}/messages", None),
        ("PATCH /v1/conversations/{id}", "PATCH", f"{API}/{source}", {"title": "stolen"}),
        ("POST /v1/conversations/{id}/fork", "POST", f"{API}/{source}/fork", {"at_sequence": 0}),
        ("DELETE /v1/conversations/{id}/messages", "DELETE",
         f"{API}/{source}/messages?from_sequence=0", None),
        ("DELETE /v1/conversations/{id}", "DELETE", f"{API}/{source}", None),
    ):
        # One refused check is counted, and the others still run.
        try:
            stranger.error(endpoint, method, path, 404, "conversation_not_found", body)
        except Failure as failure:
            TALLY.fail("isolation", str(failure))
    stranger.error(f"POST {CHAT} (json)", "POST", CHAT, 404, "conversation_not_found",
                   {"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"X-Conversation-ID": source})
    expect(get(client, source)["title"] == title, "isolation: the other owner changed the title")
    TALLY.check("another owner gets 404 everywhere")

    # Delete the source; the fork stays, with its own copies.
    gone = client.json("DELETE /v1/conversations/{id}", "DELETE", f"{API}/{source}")
    expect(gone == {"id": source, "object": "conversation.deleted", "deleted": True},
           f"delete: {gone!r}")
    client.error("GET /v1/conversations/{id}", "GET", f"{API}/{source}", 404, "conversation_not_found")
    client.error("DELETE /v1/conversations/{id}", "DELETE", f"{API}/{source}", 404,
                 "conversation_not_found")
    client.error(f"POST {CHAT} (json)", "POST", CHAT, 404, "conversation_not_found",
                 {"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                 headers={"X-Conversation-ID": source})
    expect(get(client, fork["id"])["message_count"] == 4, "delete: the fork lost messages")
    with BOOK.lock:
        del BOOK.owner[source], BOOK.extra[source]
    TALLY.check("delete removes the conversation and keeps its fork")


def manager(base, tokens, deadline):
    """The management thread: lifecycles until the deadline, with reads in between."""
    round_ = 0
    while time.monotonic() < deadline:
        round_ += 1
        token = tokens[round_ % len(tokens)]
        other = tokens[(round_ + 1) % len(tokens)]
        try:
            lifecycle(base, token, other, round_)
            # Reads while the chat clients write: the shapes must hold mid-load.
            client = Client(base, token)
            page = client.json("GET /v1/conversations", "GET", f"{API}?limit=20")
            for summary in page["conversations"]:
                check_summary(summary, "list")
            search(client, COMMON_WORD)
        except Failure as failure:
            TALLY.fail("management", str(failure))
        except Exception as error:
            TALLY.fail("management", f"{type(error).__name__}: {error}")
    return round_


def verify(base, tokens):
    """After the load: every conversation holds exactly what the driver stored."""
    def one(conversation):
        token = BOOK.owner[conversation]
        detail = get(Client(base, token), conversation)
        messages = detail["messages"]
        if conversation in BOOK.extra:
            if BOOK.extra[conversation] is not None:
                expect(len(messages) == BOOK.extra[conversation], "fork: message count changed")
            return
        if conversation in BOOK.shared:
            expect(len(messages) == 2 * BOOK.turns[conversation],
                   f"shared conversation: {len(messages)} messages after "
                   f"{BOOK.turns[conversation]} turns")
        else:
            texts = BOOK.texts[conversation]
            expect([m["content"] for m in messages[0::2]] == texts,
                   f"{conversation}: user messages differ from those sent")
        for position in range(0, len(messages), 2):
            user, assistant = messages[position], messages[position + 1]
            expect(user["role"] == "user" and assistant["role"] == "assistant",
                   f"{conversation}: roles at {position}")
            # Each turn is contiguous: the answer right after a question quotes it.
            found = REPLY.match(assistant["content"] or "")
            expect(found is not None and found.group(2) == user["content"][:200],
                   f"{conversation}: the answer at {position + 1} does not quote the question before it")
            if conversation not in BOOK.shared:
                expect(int(found.group(1)) == position + 1,
                       f"{conversation}: the answer at {position + 1} saw {found.group(1)} messages")
        if messages:
            expect(detail["title"] == messages[0]["content"][:80], f"{conversation}: title")
        if random.random() < 0.2:
            expect(pages(Client(base, token), conversation, "asc", 7) == messages,
                   f"{conversation}: pages differ")

    failures = 0
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for conversation, future in [(c, pool.submit(one, c)) for c in list(BOOK.owner)]:
            try:
                future.result()
            except Failure as failure:
                failures += 1
                TALLY.fail("verify", str(failure))
            except Exception as error:
                failures += 1
                TALLY.fail("verify", f"{type(error).__name__}: {error}")
    if not failures:
        TALLY.check("every conversation holds exactly the turns sent, each contiguous")

    for token in tokens:
        client = Client(base, token)
        try:
            summaries, total = list_all(client)
            mine = {c for c, owner in BOOK.owner.items() if owner == token}
            listed = [s["id"] for s in summaries]
            expect(len(listed) == len(set(listed)), "list: an id listed twice")
            expect(set(listed) == mine and total == len(mine),
                   f"list: {total} listed ({len(set(listed) - mine)} unexpected, "
                   f"{len(mine - set(listed))} missing), expected {len(mine)}")
            # Newest first. The store breaks ties by id on the full timestamp; the API shows
            # seconds, so ids within one second may look out of order here.
            times = [s["updated_at"] for s in summaries]
            late = next((i for i in range(1, len(times)) if times[i] > times[i - 1]), None)
            expect(late is None, f"list: not newest first: {times[late - 1]} then {times[late]}"
                   if late else "")
            found = search(client, COMMON_WORD)
            expect(found["total"] == len(mine), f"search {COMMON_WORD}: {found['total']} of {len(mine)}")
            expect(search(client, "nosuchwordanywhere")["total"] == 0, "search: a word no one wrote")
            # Operators and quotes are plain words, never query syntax.
            search(client, "it's & | ! (citus) <-> :*")
            TALLY.check("list and search show exactly the owner's conversations")
        except Failure as failure:
            TALLY.fail("list", str(failure))

    client = Client(base, tokens[0])
    try:
        client.error("GET /v1/conversations", "GET", f"{API}?limit=0", 400, "invalid_request")
        client.error("GET /v1/conversations/{id}", "GET", f"{API}/not-a-uuid", 400,
                     "invalid_conversation_id")
        client.error("GET /v1/conversations/{id}", "GET", f"{API}/{uuid.uuid4()}", 404,
                     "conversation_not_found")
        client.error(f"POST {CHAT} (json)", "POST", CHAT, 400, "invalid_conversation_id",
                     {"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                     headers={"X-Conversation-ID": "not-a-uuid"})
        TALLY.check("malformed and unknown ids answer 400 and 404")
    except Failure as failure:
        TALLY.fail("errors", str(failure))


def report(duration, rounds, elapsed):
    print(f"\n-- driver: {elapsed:.1f} s, of which {duration:.0f} s of load; "
          f"{rounds} management lifecycles")
    turns = TALLY.turns
    print(f"turns: {turns['turns']} ({turns['new']} new, {turns['continued']} continued; "
          f"{turns['streamed']} streamed, {turns['non-streamed']} non-streamed), "
          f"{turns['turns'] / duration:.1f}/s during the load; storage_failed: {turns['storage_failed']}")
    print("requests by endpoint (status: count):")
    width = max(len(e) for e in TALLY.requests)
    for endpoint in sorted(TALLY.requests):
        statuses = TALLY.requests[endpoint]
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        print(f"  {endpoint:<{width}}  {sum(statuses.values()):>6}  ({shown})")
    print(f"  {'total':<{width}}  {sum(sum(s.values()) for s in TALLY.requests.values()):>6}")
    print("checks that held:")
    for check, count in sorted(TALLY.checks.items()):
        print(f"  {check} (x{count})")
    failed = sum(TALLY.failures.values())
    print(f"failures: {failed}")
    for kind, count in TALLY.failures.most_common():
        print(f"  x{count} {TALLY.examples[kind]}")
    return failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8080")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--owners", type=int, default=4)
    parser.add_argument("--summary", help="also write the counts here, as JSON")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    tokens = [f"citus-{run}-owner-{n}" for n in range(args.owners)]
    started = time.monotonic()
    shared = {}
    try:
        for token in tokens:
            conversation, _ = Client(args.base, token).turn(
                f"shared conversation {COMMON_WORD}", seen=1)
            shared[token] = conversation
            BOOK.owner[conversation] = token
            BOOK.shared.add(conversation)
            BOOK.turns[conversation] = 1
    except (Failure, OSError) as error:
        print(f"the proxy does not hold a first turn: {error}", file=sys.stderr)
        return 1

    deadline = time.monotonic() + args.duration
    with concurrent.futures.ThreadPoolExecutor(args.clients + 1) as pool:
        clients = [pool.submit(chat_client, args.base, tokens, n, deadline, shared)
                   for n in range(args.clients)]
        management = pool.submit(manager, args.base, tokens, deadline)
        for future in clients:
            future.result()
        rounds = management.result()
    verify(args.base, tokens)

    failed = report(args.duration, rounds, time.monotonic() - started)
    if args.summary:
        with open(args.summary, "w") as out:
            json.dump({"turns": TALLY.turns, "requests": TALLY.requests,
                       "failures": dict(TALLY.failures), "conversations": len(BOOK.owner)},
                      out, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
