"""Entities declared as data: what each source record is, where it lands and how it is written.

One declaration drives the landing file's header, the validation of every record, the
staging table and the upsert into the raw table. What the raw table promises is its contract's
(``mage_project.contracts``): the columns here are checked against it, and the drift policy and
the quality gate's expectations on the raw rows (``mage_project.quality`` runs them with Great
Expectations) are read from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mage_project.contracts import DRIFT_MODES, raw_table


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    kind: str  # which validator checks the field: see mage_project.validation.PARSERS
    required: bool = False
    allowed: tuple[str, ...] = ()  # for kind "enum"


@dataclass(frozen=True)
class DriftPolicy:
    """What a load does when a source stops matching its declaration (dlt's schema-contract modes).

    Three kinds of drift, each with its mode:

    - ``unknown_field``: a field (API) or column (file) that is not declared.
    - ``missing_field``: a declared optional field absent from a record, or column from a file's
      header. A missing required field can never load: its record (API) or file is rejected.
    - ``wrong_type``: a value that is not of its declared type.

    Modes: ``freeze`` stops the load, naming the field (the API run fails; a dropped file fails
    on its own, the others load); ``discard_row`` rejects the record or row with the reason;
    ``discard_value`` loads the row without the value (an unknown field is left out, a missing
    or wrongly typed optional value becomes NULL; a required one is rejected all the same).
    There is no ``evolve``: the raw tables' columns are declared (migrations, contracts), and the
    landing copy keeps every field as sent, so a declared new column can be replayed from it.
    Every drift is counted per field in the run's summary. Each raw table's policy is its
    contract's (custom property ``schemaDrift``; ``Entity.drift_policy``).
    """

    unknown_field: str = "discard_value"
    missing_field: str = "discard_value"
    wrong_type: str = "discard_row"

    def __post_init__(self) -> None:
        for kind in ("unknown_field", "missing_field", "wrong_type"):
            if getattr(self, kind) not in DRIFT_MODES:
                raise ValueError(f"{kind}={getattr(self, kind)!r} is not one of {DRIFT_MODES}")


SEVERITIES = ("error", "warn")
SCOPES = ("rows", "files")


@dataclass(frozen=True)
class Expectation:
    """One Great Expectations expectation on an entity's raw rows, as data.

    ``scope`` "rows": evaluated over the rows of the file versions checked, in chunks, so only
    row-wise expectations (each row passes or fails on its own) belong here. ``scope`` "files":
    evaluated over one row per file version (columns ``_file_key``, ``rows``). A failed
    ``error`` expectation stops the marts from being published; a failed ``warn`` one is only
    recorded.
    """

    type: str  # a Great Expectations 0.18 expectation type
    kwargs: dict = field(default_factory=dict, hash=False)
    severity: str = "error"
    scope: str = "rows"
    name: str | None = None  # the check's name in ops.quality_results; derived when unset

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.type}: severity {self.severity!r} is not one of {SEVERITIES}")
        if self.scope not in SCOPES:
            raise ValueError(f"{self.type}: scope {self.scope!r} is not one of {SCOPES}")
        if "mostly" in self.kwargs:
            # Verdicts of chunks are combined with "and": exact only when every row must pass.
            raise ValueError(f"{self.type}: 'mostly' is not supported over chunks")

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        columns = [self.kwargs[k] for k in ("column", "column_A", "column_B") if k in self.kwargs]
        return f"{self.type}({', '.join(columns)})"


# A file version that added no row to its table: an empty export is worth a look, not a stop.
FILE_HAS_ROWS = Expectation("expect_column_values_to_be_between", {"column": "rows", "min_value": 1},
                            severity="warn", scope="files", name="file_versions_have_rows")


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
    drift: DriftPolicy | None = None  # None: its contract's (set only to try another policy)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def drift_policy(self) -> DriftPolicy:
        """What a load does with drift: ``drift`` when set, else the contract's ``schemaDrift``."""
        if self.drift is not None:
            return self.drift
        return DriftPolicy(**raw_table(self.qualified_name)[1].drift)

    @property
    def expectations(self) -> tuple[Expectation, ...]:
        """The raw gate's Great Expectations suite, from the table's contract: each ``required``
        column not null, each quality rule that is a row-wise expectation
        (``QualityRule.great_expectation``) under the rule's name and level, and ``FILE_HAS_ROWS``.
        The gate measures the contract's other rules (sql) in the warehouse, over the same rows."""
        _, table = raw_table(self.qualified_name)
        suite = [Expectation("expect_column_values_to_not_be_null", {"column": c.name})
                 for c in table.columns if c.required and c.name in self.column_names]
        for rule in table.quality:
            if rule.great_expectation is not None:
                kind, kwargs = rule.great_expectation
                suite.append(Expectation(kind, kwargs, severity=rule.level, name=rule.name))
        return (*suite, FILE_HAS_ROWS)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def key_columns(self) -> list[str]:
        return [name.strip() for name in self.primary_key.split(",")]

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

# The loader rejects a row of another status (its contract's payment_status_is_known: checked).
PAYMENT_STATUSES = ("succeeded", "failed", "refunded")

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
        Column("status", "text", "enum", required=True, allowed=PAYMENT_STATUSES),
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
