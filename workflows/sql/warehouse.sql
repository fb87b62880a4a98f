-- Tables of the `warehouse` database that the example workflows read and write.
-- Plain SQL that SQLite and PostgreSQL both accept. Apply it once to a new database, e.g.
--   sqlite3 warehouse.db < workflows/sql/warehouse.sql
--   psql "$WAREHOUSE_URL" -f workflows/sql/warehouse.sql
-- Timestamps are stored as ISO 8601 text written by the workflows ({{ now() | isoformat }}).

-- data/crm-account-sync.toml (pattern 1)
CREATE TABLE IF NOT EXISTS crm_account_snapshots (
    segment     VARCHAR(32)  NOT NULL,
    fetched_at  VARCHAR(40)  NOT NULL,
    body        TEXT         NOT NULL,
    PRIMARY KEY (segment, fetched_at)
);

CREATE TABLE IF NOT EXISTS incidents (
    source       VARCHAR(64)  NOT NULL,
    run_id       VARCHAR(64)  NOT NULL,
    occurred_at  VARCHAR(40)  NOT NULL,
    error        TEXT
);

-- data/bulk-user-import.toml (pattern 2)
CREATE TABLE IF NOT EXISTS users (
    email  VARCHAR(254)  PRIMARY KEY,
    name   VARCHAR(200)  NOT NULL
);

CREATE TABLE IF NOT EXISTS import_jobs (
    run_id       VARCHAR(64)  PRIMARY KEY,
    source       VARCHAR(64)  NOT NULL,
    total        INTEGER      NOT NULL,
    batches      INTEGER      NOT NULL,
    imported     INTEGER,
    status       VARCHAR(16)  NOT NULL,
    error        TEXT,
    started_at   VARCHAR(40)  NOT NULL,
    finished_at  VARCHAR(40)
);

-- ops/alert-routing.toml (pattern 3)
CREATE TABLE IF NOT EXISTS alerts (
    run_id       VARCHAR(64)   NOT NULL,
    received_at  VARCHAR(40)   NOT NULL,
    severity     VARCHAR(16)   NOT NULL,
    service      VARCHAR(128)  NOT NULL,
    title        TEXT          NOT NULL,
    details      TEXT,
    route        VARCHAR(16)   NOT NULL
);

-- orders/*.toml (patterns 4, 5, 6)
CREATE TABLE IF NOT EXISTS orders (
    id               VARCHAR(64)     PRIMARY KEY,
    customer_id      VARCHAR(64)     NOT NULL,
    created_at       VARCHAR(40)     NOT NULL,
    currency         VARCHAR(3)      NOT NULL,
    total            NUMERIC(12, 2)  NOT NULL,
    status           VARCHAR(16)     NOT NULL,
    tracking_number  VARCHAR(64),
    refund_id        VARCHAR(64),
    cancel_reason    TEXT
);

CREATE TABLE IF NOT EXISTS backorders (
    order_id  VARCHAR(64)  NOT NULL,
    sku       VARCHAR(64)  NOT NULL,
    qty       INTEGER      NOT NULL
);

-- onboarding/*.toml (patterns 10, 15)
CREATE TABLE IF NOT EXISTS sanctioned_entities (
    list         VARCHAR(64)   NOT NULL,
    listed_name  VARCHAR(256)  NOT NULL
);

CREATE TABLE IF NOT EXISTS compliance_checks (
    run_id      VARCHAR(64)   NOT NULL,
    company     VARCHAR(256)  NOT NULL,
    country     VARCHAR(2)    NOT NULL,
    approved    BOOLEAN       NOT NULL,
    reason      TEXT          NOT NULL,
    checked_at  VARCHAR(40)   NOT NULL
);

CREATE TABLE IF NOT EXISTS accounts (
    id           VARCHAR(64)   PRIMARY KEY,
    company      VARCHAR(256)  NOT NULL,
    admin_email  VARCHAR(254)  NOT NULL,
    plan         VARCHAR(16)   NOT NULL,
    tier         VARCHAR(16)   NOT NULL,
    created_at   VARCHAR(40)   NOT NULL
);

CREATE TABLE IF NOT EXISTS email_unsubscribes (
    email  VARCHAR(254)  PRIMARY KEY
);

-- ai/document-processing.toml (pattern 11)
CREATE TABLE IF NOT EXISTS documents (
    id             VARCHAR(128)  PRIMARY KEY,
    category       VARCHAR(16)   NOT NULL,
    confidence     REAL,
    line_items     TEXT,
    summary        TEXT,
    input_tokens   INTEGER       NOT NULL,
    output_tokens  INTEGER       NOT NULL,
    processed_at   VARCHAR(40)   NOT NULL
);

-- data/event-stats.toml (pattern 13)
CREATE TABLE IF NOT EXISTS events (
    day            VARCHAR(10)  NOT NULL,
    partition_key  INTEGER      NOT NULL,  -- derived from user_id
    user_id        VARCHAR(64)  NOT NULL,
    status         INTEGER      NOT NULL
);

CREATE TABLE IF NOT EXISTS daily_event_stats (
    day     VARCHAR(10)  PRIMARY KEY,
    events  INTEGER      NOT NULL,
    errors  INTEGER      NOT NULL,
    users   INTEGER      NOT NULL
);

-- data/settlement-sync.toml (pattern 18)
CREATE TABLE IF NOT EXISTS settlements (
    id        VARCHAR(64)     PRIMARY KEY,
    day       VARCHAR(10)     NOT NULL,
    amount    NUMERIC(12, 2)  NOT NULL,
    fee       NUMERIC(12, 2)  NOT NULL,
    currency  VARCHAR(3)      NOT NULL
);

CREATE TABLE IF NOT EXISTS daily_revenue (
    day    VARCHAR(10)     PRIMARY KEY,
    gross  NUMERIC(12, 2)  NOT NULL,
    fees   NUMERIC(12, 2)  NOT NULL,
    net    NUMERIC(12, 2)  NOT NULL
);
