-- Each day's ingest accounting (the lake keeps it in the ingest result only): rows read, published, dropped as
-- duplicates and quarantined (by reason), for transactions and labels, and the raw lake version it published.
-- One row per ds, replaced by the next publish of the day (a rerun, a re-ingest, a range backfill), never by an
-- older one: raw_version is sortable and the upsert keeps the newest.

CREATE TABLE IF NOT EXISTS ${schema}.ingest_runs (
    ds                          date             PRIMARY KEY,
    raw_version                 text             NOT NULL,
    rows_read                   bigint           NOT NULL CHECK (rows_read >= 0),
    rows_published              bigint           NOT NULL CHECK (rows_published >= 0),
    duplicates_dropped          bigint           NOT NULL DEFAULT 0 CHECK (duplicates_dropped >= 0),
    rows_quarantined            bigint           NOT NULL CHECK (rows_quarantined >= 0),
    quarantine_rate             double precision NOT NULL CHECK (quarantine_rate >= 0 AND quarantine_rate <= 1),
    quarantined_by_reason       jsonb            NOT NULL DEFAULT '{}'::jsonb,
    files                       integer          NOT NULL DEFAULT 0,
    files_quarantined           integer          NOT NULL DEFAULT 0,
    label_rows_read             bigint           NOT NULL DEFAULT 0,
    label_rows_published        bigint           NOT NULL DEFAULT 0,
    label_rows_quarantined      bigint           NOT NULL DEFAULT 0,
    label_quarantined_by_reason jsonb            NOT NULL DEFAULT '{}'::jsonb,
    published_by                text             NOT NULL,
    airflow_run_id              text,
    recorded_at                 timestamptz      NOT NULL DEFAULT now()
);
COMMENT ON TABLE ${schema}.ingest_runs IS 'One row per ingested day: the transactions and labels read, published to the raw layer and quarantined (with reasons), and the raw lake version published. Written by feature_pipeline.record_ingest and backfill_range after the raw layer is committed.';
COMMENT ON COLUMN ${schema}.ingest_runs.raw_version IS 'The lake version of raw/transactions (and the rest of the raw layer) this row describes; a newer publish of the day replaces the row, an older one never does.';
COMMENT ON COLUMN ${schema}.ingest_runs.rows_read IS 'Transaction rows in the day''s landing files (rows of quarantined files included).';
COMMENT ON COLUMN ${schema}.ingest_runs.rows_published IS 'Transaction rows committed to raw/transactions.';
COMMENT ON COLUMN ${schema}.ingest_runs.rows_quarantined IS 'Transaction rows written to quarantine/transactions instead (with their reason).';
COMMENT ON COLUMN ${schema}.ingest_runs.quarantine_rate IS 'rows_quarantined / rows_read (what the ingest_stats gate checks).';
COMMENT ON COLUMN ${schema}.ingest_runs.quarantined_by_reason IS 'Quarantined transaction rows per reason, e.g. {"amount_not_numeric": 3}.';
COMMENT ON COLUMN ${schema}.ingest_runs.published_by IS 'What published the day: feature_pipeline or backfill_range.';
COMMENT ON COLUMN ${schema}.ingest_runs.ds IS 'The day ingested (the landing drop''s ds).';
COMMENT ON COLUMN ${schema}.ingest_runs.duplicates_dropped IS 'Transaction rows dropped as repeats of a transaction_id already seen that day (not quarantined).';
COMMENT ON COLUMN ${schema}.ingest_runs.files IS 'Transaction files in the day''s landing drop.';
COMMENT ON COLUMN ${schema}.ingest_runs.files_quarantined IS 'Of those, files quarantined whole (unreadable, wrong header).';
COMMENT ON COLUMN ${schema}.ingest_runs.label_rows_read IS 'Label rows in the day''s landing files.';
COMMENT ON COLUMN ${schema}.ingest_runs.label_rows_published IS 'Label rows committed to raw/labels.';
COMMENT ON COLUMN ${schema}.ingest_runs.label_rows_quarantined IS 'Label rows written to quarantine/labels instead.';
COMMENT ON COLUMN ${schema}.ingest_runs.label_quarantined_by_reason IS 'Quarantined label rows per reason.';
COMMENT ON COLUMN ${schema}.ingest_runs.airflow_run_id IS 'The Airflow run that published the day.';
COMMENT ON COLUMN ${schema}.ingest_runs.recorded_at IS 'When this row was written.';
