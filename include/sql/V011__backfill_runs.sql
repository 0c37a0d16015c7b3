-- Range backfills: one row per backfill (its progress while it runs, where it stopped and why), and the days
-- whose scores or drift reports were computed from features a correction has since replaced (stale).

CREATE TABLE IF NOT EXISTS ${schema}.backfill_runs (
    run_id         text        PRIMARY KEY,
    start_ds       date        NOT NULL,
    end_ds         date        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('running', 'failed', 'succeeded', 'superseded')),
    days_total     integer     NOT NULL,
    days_done      integer     NOT NULL DEFAULT 0,
    cascade_days   integer     NOT NULL DEFAULT 0,
    next_ds        date,
    current_chunk  text,
    rows_done      bigint      NOT NULL DEFAULT 0,
    rows_per_s     double precision,
    eta_seconds    double precision,
    failed_ds      date,
    reason         text,
    resumed_from   text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    CHECK (start_ds <= end_ds)
);
COMMENT ON TABLE ${schema}.backfill_runs IS 'One row per range backfill (backfill_range DAG run): progress while it runs, the day it stopped at and why.';
COMMENT ON COLUMN ${schema}.backfill_runs.days_total IS 'Days the backfill publishes: the requested range plus the later published days a correction recomputes (cascade_days).';
COMMENT ON COLUMN ${schema}.backfill_runs.next_ds IS 'The first day not yet published by this backfill; a rerun of the same range resumes there (NULL once done).';
COMMENT ON COLUMN ${schema}.backfill_runs.current_chunk IS 'The chunk of days being processed, as first..last (i/n).';
COMMENT ON COLUMN ${schema}.backfill_runs.rows_per_s IS 'Raw transactions published per second of this run so far.';
COMMENT ON COLUMN ${schema}.backfill_runs.eta_seconds IS 'Estimated seconds left, from the days done so far.';
COMMENT ON COLUMN ${schema}.backfill_runs.reason IS 'Why it failed (the failed gate or error of failed_ds).';
COMMENT ON COLUMN ${schema}.backfill_runs.resumed_from IS 'run_id of the unfinished backfill of the same range this one resumed.';
CREATE INDEX IF NOT EXISTS backfill_runs_range ON ${schema}.backfill_runs (start_ds, end_ds, started_at DESC);

-- A correction recomputes later days' features; what was scored or measured on the old features is stale
-- until batch_score (which clears scoring_runs.stale) or drift_monitor (which replaces drift_runs) reruns.
ALTER TABLE ${schema}.scoring_runs
    ADD COLUMN IF NOT EXISTS stale        boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS stale_reason text;
ALTER TABLE ${schema}.drift_runs
    ADD COLUMN IF NOT EXISTS stale        boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS stale_reason text;
COMMENT ON COLUMN ${schema}.scoring_runs.stale IS 'true: the day''s features were recomputed after it was scored (a correction); re-score with `loopline rescore-stale`.';
COMMENT ON COLUMN ${schema}.drift_runs.stale IS 'true: the day''s features were recomputed after its drift report (a correction); rerun drift_monitor for the day.';

CREATE OR REPLACE VIEW ${schema}.stale_days AS
SELECT ds, 'scores' AS output, role AS detail, stale_reason AS reason FROM ${schema}.scoring_runs WHERE stale
UNION ALL
SELECT ds, 'drift_report' AS output, NULL AS detail, stale_reason AS reason FROM ${schema}.drift_runs WHERE stale;
COMMENT ON VIEW ${schema}.stale_days IS 'One line per day and output (scores per role, drift report) computed from features a correction has since replaced.';
