//! A test upstream that speaks OpenAI-compatible SSE: owned by the layer tests.
