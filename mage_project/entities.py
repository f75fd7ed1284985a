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
    allowed: tuple[str, ...] = ()  # for kind "enum"


@dataclass(frozen=True)
class Entity:
    pipeline: str
    source: str
    name: str
    schema: str
    table: str
    primary_key: str
    cursor_field: str | None  # the field windows and watermarks are defined on, if any
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

# File drops (the warehouse_elt pipeline): loaded append-only into raw.<source>__<entity>,
# each row with its file's lineage; the latest version of a key is chosen downstream.
CRM_CUSTOMERS = Entity(
    pipeline="warehouse_elt",
    source="crm",
    name="customers",
    schema="raw",
    table="crm__customers",
    primary_key="customer_id",
    cursor_field=None,
    write_mode="append",
    columns=(
        Column("customer_id", "bigint", "bigint", required=True),
        Column("email", "text", "text"),
        Column("full_name", "text", "text"),
        Column("country", "text", "country"),
        Column("signup_at", "timestamptz", "timestamptz", required=True),
        Column("utm_campaign", "text", "text"),
        Column("updated_at", "timestamptz", "timestamptz", required=True),
    ),
)
BILLING_PAYMENTS = Entity(
    pipeline="warehouse_elt",
    source="billing",
    name="payments",
    schema="raw",
    table="billing__payments",
    primary_key="payment_id",
    cursor_field=None,
    write_mode="append",
    columns=(
        Column("payment_id", "text", "key", required=True),
        Column("customer_id", "bigint", "bigint", required=True),
        Column("amount", "numeric(18,2)", "positive_decimal", required=True),
        Column("status", "text", "enum", required=True,
               allowed=("succeeded", "failed", "refunded")),
        Column("paid_at", "timestamptz", "timestamptz", required=True),
        Column("updated_at", "timestamptz", "timestamptz", required=True),
    ),
)
MARKETING_AD_SPEND = Entity(
    pipeline="warehouse_elt",
    source="marketing",
    name="ad_spend",
    schema="raw",
    table="marketing__ad_spend",
    primary_key="date, campaign, channel",
    cursor_field=None,
    write_mode="append",
    columns=(
        Column("date", "date", "date", required=True),
        Column("campaign", "text", "key", required=True),
        Column("channel", "text", "key", required=True),
        Column("spend", "numeric(18,2)", "decimal", required=True),
        Column("impressions", "bigint", "count", required=True),
        Column("clicks", "bigint", "count", required=True),
    ),
)

FILE_ENTITIES = {e.landing_prefix(): e for e in (CRM_CUSTOMERS, BILLING_PAYMENTS,
                                                  MARKETING_AD_SPEND)}
ENTITIES = {USER_ACTIVITY.pipeline: USER_ACTIVITY}
