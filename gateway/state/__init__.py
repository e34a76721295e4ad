"""State that outlives a request: daily salts, rate limits and velocity counts (in the data dir,
or in Redis for many nodes), and the generation counter the worker's memos follow."""
