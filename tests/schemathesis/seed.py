"""Seeds a running proxy with conversations for schemathesis, over HTTP, and writes the ids
it made as libFuzzer dictionaries (one quoted value a line) for schemathesis.toml.

Usage: python seed.py BASE_URL KEY OUT_DIR
  kept.dict     conversations that the run reads, updates, forks and adds items to
  doomed.dict   conversations that the run may delete or truncate

Every conversation holds the same first five items, so that the document's item id
examples (msg_0, fc_2_0, fco_3) name real items in each: a system and a user message, a
function call and its output, the assistant's answer. Then each gets a turn through chat
completions with X-Conversation-ID (the demo model answers), and some a chat-form import
with parts, tool calls and a refusal. Standard library only.
"""

import json
import sys
import urllib.request

KEPT = 6
DOOMED = 12

FIRST_ITEMS = [
    {"type": "message", "role": "system", "content": "Be brief."},
    {"type": "message", "role": "user", "content": "What time is it in Lisbon?"},
    {"type": "function_call", "call_id": "call_clock", "name": "clock", "arguments": "{\"city\": \"Lisbon\"}"},
    {"type": "function_call_output", "call_id": "call_clock", "output": "09:30"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is 09:30."}]},
]

IMPORTED_MESSAGES = [
    {"role": "user", "content": [
        {"type": "text", "text": "Describe this picture."},
        {"type": "image_url", "image_url": {"url": "https://example.com/alps.png", "detail": "low"}},
    ]},
    {"role": "assistant", "content": "Mountains.", "reasoning": "It shows peaks."},
    {"role": "user", "content": "Book me a hut there."},
    {"role": "assistant", "content": None, "refusal": "I cannot book huts."},
]


def call(base, key, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def conversation(base, key, index):
    created = call(base, key, "POST", "/v1/conversations", {
        "metadata": {"seed": str(index), "topic": "travel"},
        "items": FIRST_ITEMS,
    })
    conversation_id = created["id"]
    call(base, key, "POST", "/v1/chat/completions", {
        "model": "demo",
        "messages": [{"role": "user", "content": f"And the weather, take {index}?"}],
    }, headers={"X-Conversation-ID": conversation_id})
    if index % 2 == 0:
        call(base, key, "PATCH", f"/v1/conversations/{conversation_id}", {"title": f"Lisbon trip {index}"})
    return conversation_id


def main(base, key, out_dir):
    kept = [conversation(base, key, index) for index in range(KEPT)]
    kept.append(call(base, key, "POST", "/v1/conversations", {
        "title": "Imported", "messages": IMPORTED_MESSAGES,
    })["id"])
    doomed = [conversation(base, key, KEPT + index) for index in range(DOOMED)]
    for name, ids in (("kept", kept), ("doomed", doomed)):
        with open(f"{out_dir}/{name}.dict", "w", encoding="utf-8") as out:
            out.writelines(f'"{conversation_id}"\n' for conversation_id in ids)
    print(f"seeded {len(kept)} conversations to keep and {len(doomed)} to delete")


if __name__ == "__main__":
    main(*sys.argv[1:4])
