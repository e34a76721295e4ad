"""Enrichment of kept events: User-Agent, referrer source, registrable domains, the geo adapter,
and the columns each brings to a stored row."""
