"""OpenAI's official Python SDK against the proxy's /v1/conversations, with strict
response validation: every answer must parse as the SDK's own types.

Usage: python openai_sdk.py BASE_URL   (BASE_URL ends in /v1)
Exits 0 when every step holds, 1 with the failed step otherwise.
"""

import sys

from openai import OpenAI


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def main(base_url):
    client = OpenAI(base_url=base_url, api_key="sk-sdk-test", _strict_response_validation=True)

    conversation = client.conversations.create(
        metadata={"topic": "demo"},
        items=[
            {"type": "message", "role": "system", "content": "Be brief."},
            {"type": "message", "role": "user", "content": "Hello!"},
        ],
    )
    check(conversation.object == "conversation", f"create: {conversation!r}")
    check(conversation.metadata == {"topic": "demo"}, f"create metadata: {conversation.metadata!r}")
    check(isinstance(conversation.created_at, int), "create: created_at in unix seconds")

    retrieved = client.conversations.retrieve(conversation.id)
    check(retrieved.id == conversation.id, f"retrieve: {retrieved!r}")

    updated = client.conversations.update(conversation.id, metadata={"topic": "alps"})
    check(updated.metadata == {"topic": "alps"}, f"update: {updated!r}")

    created = client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": "What time is it?"},
            {"type": "function_call", "call_id": "call_1", "name": "clock", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "09:30"},
        ],
    )
    check([item.type for item in created.data] == ["message", "function_call", "function_call_output"],
          f"items create: {created!r}")
    check(created.first_id == created.data[0].id and created.last_id == created.data[-1].id,
          "items create: first_id and last_id")

    # Auto-pagination, two items a page, in both orders: every item exactly once.
    ascending = [item.id for item in client.conversations.items.list(conversation.id, order="asc", limit=2)]
    descending = [item.id for item in client.conversations.items.list(conversation.id, order="desc", limit=2)]
    check(len(ascending) == 5 and len(set(ascending)) == 5, f"items list asc: {ascending}")
    check(descending == list(reversed(ascending)), f"items list desc: {descending} vs {ascending}")

    first = client.conversations.items.retrieve(ascending[0], conversation_id=conversation.id)
    check(first.type == "message" and first.role == "system", f"items retrieve: {first!r}")
    call = client.conversations.items.retrieve(created.data[1].id, conversation_id=conversation.id)
    check(call.type == "function_call" and call.call_id == "call_1", f"items retrieve call: {call!r}")

    # The same conversation continues through chat completions and X-Conversation-ID.
    completion = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "And the weather?"}],
        extra_headers={"X-Conversation-ID": conversation.id},
    )
    check(completion.choices[0].message.content, f"chat: {completion!r}")
    after_chat = [item for item in client.conversations.items.list(conversation.id, order="asc")]
    check(len(after_chat) == 7, f"items after the chat turn: {[i.id for i in after_chat]}")
    check(after_chat[5].type == "message" and after_chat[5].role == "user", "the chat turn's question")
    check(after_chat[6].role == "assistant" and after_chat[6].content[0].type == "output_text",
          "the chat turn's answer")

    # Deleting the function call deletes its output too, and answers the conversation.
    after_delete = client.conversations.items.delete(call.id, conversation_id=conversation.id)
    check(after_delete.object == "conversation" and after_delete.id == conversation.id,
          f"items delete: {after_delete!r}")
    left = [item.id for item in client.conversations.items.list(conversation.id, order="asc")]
    check(left == [i.id for i in after_chat if i.id not in (call.id, created.data[2].id)],
          f"items after deleting the call: {left}")
    try:
        client.conversations.items.retrieve(created.data[2].id, conversation_id=conversation.id)
    except Exception as error:  # the SDK's NotFoundError
        check(getattr(error, "status_code", None) == 404, f"the call's output after delete: {error!r}")
    else:
        raise AssertionError("the call's output outlived its call")

    deleted = client.conversations.delete(conversation.id)
    check(deleted.deleted and deleted.object == "conversation.deleted", f"delete: {deleted!r}")
    try:
        client.conversations.retrieve(conversation.id)
    except Exception as error:  # the SDK's NotFoundError
        check(getattr(error, "status_code", None) == 404, f"retrieve after delete: {error!r}")
    else:
        raise AssertionError("retrieve after delete succeeded")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print("ok: the OpenAI SDK's conversations calls all passed")
