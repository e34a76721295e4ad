"""The edge tracker gateway: the Sanic app and its handlers, the CLI, the gateway config, and
in subpackages the request path (`ingest`), enrichment (`enrich`), shared state (`state`) and
storage (`store`). docs/architecture.md follows a request through it."""
