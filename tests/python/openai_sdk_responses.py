"""OpenAI's official Python SDK against the proxy's /v1/responses (the demo model behind
it), with strict response validation: every answer and every streamed event must parse
as the SDK's own types.

Usage: python openai_sdk_responses.py BASE_URL   (BASE_URL ends in /v1)
Exits 0 when every step holds, 1 with the failed step otherwise.
"""

import sys

from openai import OpenAI

TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}]


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def sent(response, count):
    """The demo model says how many messages it was sent."""
    plural = "" if count == 1 else "s"
    return f"You sent {count} message{plural};" in response.output_text


def main(base_url):
    client = OpenAI(base_url=base_url, api_key="sk-sdk-test", _strict_response_validation=True)

    plain = client.responses.create(model="demo", input="Hello!")
    check(plain.object == "response" and plain.status == "completed", f"create: {plain!r}")
    check(plain.id.startswith("resp_"), f"create id: {plain.id}")
    check(sent(plain, 1), f"output_text: {plain.output_text!r}")
    check(plain.usage.output_tokens > 0 and plain.usage.input_tokens_details.cached_tokens == 0,
          f"usage: {plain.usage!r}")

    # Streamed, with the SDK's helper, continuing the plain response.
    with client.responses.stream(model="demo", input="Stream it.", previous_response_id=plain.id) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    check(kinds[0] == "response.created" and kinds[-1] == "response.completed", f"events: {kinds}")
    check("response.output_text.delta" in kinds, f"no text deltas: {kinds}")
    check(sent(final, 3), f"streamed output_text: {final.output_text!r}")

    # Three turns chained by previous_response_id, then a branch from the first.
    one = client.responses.create(model="demo", input="one", instructions="Be brief.")
    two = client.responses.create(model="demo", input="two", previous_response_id=one.id)
    three = client.responses.create(model="demo", input="three", previous_response_id=two.id)
    check(sent(one, 2), f"instructions go first: {one.output_text!r}")
    check(sent(three, 5), f"a three-turn chain, instructions not carried: {three.output_text!r}")
    branch = client.responses.create(model="demo", input="branch", previous_response_id=one.id)
    check(sent(branch, 3), f"a branch sees only its chain: {branch.output_text!r}")
    again = client.responses.create(model="demo", input="on", previous_response_id=three.id)
    check(sent(again, 7), f"the first chain is untouched by the branch: {again.output_text!r}")

    # One conversation, used from chat completions and from the Responses API.
    conversation = client.conversations.create()
    client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "via chat"}],
        extra_headers={"X-Conversation-ID": conversation.id},
    )
    shared = client.responses.create(model="demo", input="via responses", conversation=conversation.id)
    check(sent(shared, 3), f"the conversation's chat turn comes first: {shared.output_text!r}")
    check(shared.conversation.id == conversation.id, f"conversation: {shared.conversation!r}")
    items = [item for item in client.conversations.items.list(conversation.id, order="asc")]
    check(len(items) == 4, f"the conversation's items: {[i.id for i in items]}")

    # A function-calling round trip.
    called = client.responses.create(model="demo", input="Weather in Paris?", tools=TOOLS)
    call = called.output[0]
    check(call.type == "function_call" and call.name == "get_weather", f"function_call: {called.output!r}")
    answered = client.responses.create(
        model="demo",
        tools=TOOLS,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21°C"}],
    )
    check("sunny, 21°C" in answered.output_text, f"the tool result reached the model: {answered.output_text!r}")

    # Retrieve, input items, delete.
    retrieved = client.responses.retrieve(three.id)
    check(retrieved.id == three.id and retrieved.output_text == three.output_text, f"retrieve: {retrieved!r}")
    inputs = client.responses.input_items.list(answered.id)
    check([item.type for item in inputs.data] == ["function_call_output"], f"input_items: {inputs!r}")
    deleted = client.responses.delete(branch.id)
    check(deleted is None or getattr(deleted, "deleted", True), f"delete: {deleted!r}")
    try:
        client.responses.retrieve(branch.id)
    except Exception as error:  # the SDK's NotFoundError
        check(getattr(error, "status_code", None) == 404, f"retrieve after delete: {error!r}")
    else:
        raise AssertionError("retrieve after delete succeeded")

    # Read-your-writes: each follow-up is sent the moment response.completed arrives.
    previous = client.responses.create(model="demo", input="start")
    for turn in range(200):
        with client.responses.stream(model="demo", input=f"turn {turn}", previous_response_id=previous.id) as stream:
            for event in stream:
                if event.type == "response.completed":
                    break
            completed = event.response
        check(completed.status == "completed", f"turn {turn}: {completed!r}")
        check(not (completed.metadata or {}).get("storage_failed"), f"turn {turn} was not stored")
        # The chain holds every earlier turn: 2 messages each, then this input.
        check(sent(completed, 2 * turn + 3), f"turn {turn} missed the previous one: {completed.output_text!r}")
        previous = completed


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print("ok: the OpenAI SDK's responses calls all passed")
