"""The upstream: the OpenAI-compatible streaming client, SSE decoder, simulator, catalogue."""
