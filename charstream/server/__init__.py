"""`charstream serve`'s HTTP server: OpenAI-compatible completions, a curl endpoint and a page, over starlette."""
