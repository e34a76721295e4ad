"""The stored event row: one schema for every sink.

Column names follow Plausible's ClickHouse `events` table where one exists. A row is a plain
tuple in `COLUMNS` order, built once per accepted event by the pipeline.
"""

from __future__ import annotations

# (name, SQLite type, ClickHouse type)
COLUMN_TYPES: tuple[tuple[str, str, str], ...] = (
    ("event_id", "TEXT NOT NULL PRIMARY KEY", "String"),
    ("timestamp", "TEXT NOT NULL", "DateTime"),
    ("name", "TEXT NOT NULL", "String"),
    ("domain", "TEXT NOT NULL", "String"),
    ("user_id", "INTEGER NOT NULL", "Int64"),
    ("hostname", "TEXT NOT NULL", "String"),
    ("pathname", "TEXT NOT NULL", "String"),
    ("referrer", "TEXT NOT NULL", "String"),
    ("referrer_source", "TEXT NOT NULL", "String"),
    ("click_id_param", "TEXT NOT NULL", "String"),
    ("utm_medium", "TEXT NOT NULL", "String"),
    ("utm_source", "TEXT NOT NULL", "String"),
    ("utm_campaign", "TEXT NOT NULL", "String"),
    ("utm_content", "TEXT NOT NULL", "String"),
    ("utm_term", "TEXT NOT NULL", "String"),
    ("country_code", "TEXT NOT NULL", "FixedString(2)"),
    ("subdivision1_code", "TEXT NOT NULL", "String"),
    ("subdivision2_code", "TEXT NOT NULL", "String"),
    ("city_geoname_id", "INTEGER NOT NULL", "UInt32"),
    ("screen_size", "TEXT NOT NULL", "String"),
    ("operating_system", "TEXT NOT NULL", "String"),
    ("operating_system_version", "TEXT NOT NULL", "String"),
    ("browser", "TEXT NOT NULL", "String"),
    ("browser_version", "TEXT NOT NULL", "String"),
    ("meta.key", "TEXT NOT NULL", "Array(String)"),  # JSON array text in SQLite
    ("meta.value", "TEXT NOT NULL", "Array(String)"),
    ("scroll_depth", "INTEGER NOT NULL", "UInt8"),
    ("engagement_time", "INTEGER NOT NULL", "UInt32"),
    ("interactive", "INTEGER NOT NULL", "UInt8"),
    ("revenue_source_amount", "TEXT", "Nullable(String)"),
    ("revenue_source_currency", "TEXT NOT NULL", "String"),
    ("tracker_version", "INTEGER NOT NULL", "UInt16"),
)

COLUMNS: tuple[str, ...] = tuple(c[0] for c in COLUMN_TYPES)
INDEX = {name: i for i, name in enumerate(COLUMNS)}
