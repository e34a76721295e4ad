"""Storage: the durable spool, the shipper process, and the sinks (SQLite, ClickHouse)."""
