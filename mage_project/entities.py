"""Entities declared as data: what each source record is, where it lands and how it is written.

One declaration drives the landing file's header, the validation of every record, the
staging table and the upsert into the raw table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    kind: str  # which validator checks the field: see mage_project.validation.PARSERS
    required: bool = False


@dataclass(frozen=True)
class Entity:
    pipeline: str
    source: str
    name: str
    schema: str
    table: str
    primary_key: str
    cursor_field: str  # the field windows and watermarks are defined on
    columns: tuple[Column, ...]
    write_mode: str = "upsert"  # later delivery of the same key wins

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def rejects_table(self) -> str:
        return f"{self.table}_rejects"

    def landing_prefix(self) -> str:
        return f"{self.source}/{self.name}"


USER_ACTIVITY = Entity(
    pipeline="user_activity_ingest",
    source="activity",
    name="user_activity",
    schema="raw",
    table="user_activity",
    primary_key="event_id",
    cursor_field="occurred_at",
    columns=(
        Column("event_id", "text", "key", required=True),
        Column("user_id", "bigint", "bigint", required=True),
        Column("event_type", "text", "text", required=True),
        Column("occurred_at", "timestamptz", "timestamptz", required=True),
        Column("session_id", "text", "text"),
        Column("page_url", "text", "text"),
        Column("properties", "jsonb", "json_object"),
        Column("amount", "numeric", "numeric"),
    ),
)

ENTITIES = {USER_ACTIVITY.pipeline: USER_ACTIVITY}
