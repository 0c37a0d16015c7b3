-- Batch scores for analysts: one row per transaction and day, replaced as a whole day by batch_score.
CREATE TABLE IF NOT EXISTS ${schema}.transaction_scores (
    ds              date             NOT NULL,
    transaction_id  text             NOT NULL,
    customer_id     text             NOT NULL,
    merchant_id     text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    amount_eur      double precision NOT NULL,
    score           double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    decision        text             NOT NULL CHECK (decision IN ('flag', 'pass')),
    threshold       double precision NOT NULL,
    model_name      text             NOT NULL,
    model_version   integer          NOT NULL,
    model_run_id    text             NOT NULL,
    scored_at       timestamptz      NOT NULL,
    reasons         jsonb,
    reason_method   text             CHECK (reason_method IN ('tree_shap', 'saabas', 'occlusion')),
    PRIMARY KEY (ds, transaction_id)
);
COMMENT ON TABLE ${schema}.transaction_scores IS 'Fraud scores of the champion model, one row per transaction; each day (ds) is replaced atomically by the batch_score DAG.';
COMMENT ON COLUMN ${schema}.transaction_scores.ds IS 'Day the transaction belongs to (UTC), the batch_score run''s logical date.';
COMMENT ON COLUMN ${schema}.transaction_scores.transaction_id IS 'Transaction id from the source system.';
COMMENT ON COLUMN ${schema}.transaction_scores.customer_id IS 'Customer who made the transaction.';
COMMENT ON COLUMN ${schema}.transaction_scores.merchant_id IS 'Merchant the transaction went to.';
COMMENT ON COLUMN ${schema}.transaction_scores.event_time IS 'When the transaction happened (UTC).';
COMMENT ON COLUMN ${schema}.transaction_scores.amount_eur IS 'Amount normalised to EUR.';
COMMENT ON COLUMN ${schema}.transaction_scores.score IS 'Calibrated fraud probability (0..1).';
COMMENT ON COLUMN ${schema}.transaction_scores.decision IS 'flag when score >= threshold, else pass.';
COMMENT ON COLUMN ${schema}.transaction_scores.threshold IS 'Decision threshold in force when the day was scored.';
COMMENT ON COLUMN ${schema}.transaction_scores.model_name IS 'MLflow registered model name.';
COMMENT ON COLUMN ${schema}.transaction_scores.model_version IS 'MLflow registered model version that scored the whole day.';
COMMENT ON COLUMN ${schema}.transaction_scores.model_run_id IS 'MLflow run that trained that version.';
COMMENT ON COLUMN ${schema}.transaction_scores.scored_at IS 'When the scoring job ran.';
COMMENT ON COLUMN ${schema}.transaction_scores.reasons IS 'Top reason codes (features that raised the score most): [{"feature", "value", "contribution" (log-odds)}]; NULL when not explained (by default only flagged rows are).';
COMMENT ON COLUMN ${schema}.transaction_scores.reason_method IS 'How reasons were computed: tree_shap (exact XGBoost SHAP), saabas (approximate), occlusion (MLP); NULL when not explained.';
-- Analysts' usual questions: one customer's history, the flagged queue of a day, one model version's output.
CREATE INDEX IF NOT EXISTS transaction_scores_customer ON ${schema}.transaction_scores (customer_id, event_time DESC);
CREATE INDEX IF NOT EXISTS transaction_scores_flagged ON ${schema}.transaction_scores (ds, score DESC) WHERE decision = 'flag';
CREATE INDEX IF NOT EXISTS transaction_scores_model ON ${schema}.transaction_scores (model_name, model_version, ds);
CREATE INDEX IF NOT EXISTS transaction_scores_transaction ON ${schema}.transaction_scores (transaction_id);

-- Shadow scores of the challenger (when there is one), same shape, for comparison before a promotion.
CREATE TABLE IF NOT EXISTS ${schema}.transaction_scores_shadow (LIKE ${schema}.transaction_scores INCLUDING ALL);
COMMENT ON TABLE ${schema}.transaction_scores_shadow IS 'Shadow scores of the challenger model, same columns as transaction_scores; compare before promoting.';

-- One row per day and role loaded: which model, how many rows, how long, which Airflow run.
CREATE TABLE IF NOT EXISTS ${schema}.scoring_runs (
    ds               date        NOT NULL,
    role             text        NOT NULL CHECK (role IN ('champion', 'challenger')),
    model_name       text        NOT NULL,
    model_version    integer     NOT NULL,
    model_run_id     text        NOT NULL,
    threshold        double precision NOT NULL,
    rows_scored      bigint      NOT NULL,
    rows_flagged     bigint      NOT NULL,
    rows_explained   bigint      NOT NULL,
    score_seconds    double precision NOT NULL,
    load_seconds     double precision NOT NULL,
    lake_uri         text        NOT NULL,
    airflow_run_id   text,
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ds, role)
);
COMMENT ON TABLE ${schema}.scoring_runs IS 'One row per day (and role) loaded by batch_score; replaced with the day''s rows in the same transaction.';
COMMENT ON COLUMN ${schema}.scoring_runs.role IS 'champion (transaction_scores) or challenger (transaction_scores_shadow).';
COMMENT ON COLUMN ${schema}.scoring_runs.rows_scored IS 'Rows loaded for the day (equals the day''s feature rows).';
COMMENT ON COLUMN ${schema}.scoring_runs.rows_flagged IS 'Rows with decision = flag.';
COMMENT ON COLUMN ${schema}.scoring_runs.rows_explained IS 'Rows with reason codes.';
COMMENT ON COLUMN ${schema}.scoring_runs.score_seconds IS 'Spark scoring wall time (score, explain, write the lake partition).';
COMMENT ON COLUMN ${schema}.scoring_runs.load_seconds IS 'Postgres load wall time (delete the day, COPY, commit).';
COMMENT ON COLUMN ${schema}.scoring_runs.lake_uri IS 'The lake partition version the rows were loaded from.';
COMMENT ON COLUMN ${schema}.scoring_runs.airflow_run_id IS 'Airflow dag_run run_id of the batch_score run (NULL when loaded by hand).';

-- The latest scores: the most recently scored day's rows with the champion's verdicts.
CREATE OR REPLACE VIEW ${schema}.latest_scores AS
SELECT s.*
FROM ${schema}.transaction_scores s
WHERE s.ds = (SELECT max(ds) FROM ${schema}.scoring_runs WHERE role = 'champion');
COMMENT ON VIEW ${schema}.latest_scores IS 'Scores of the most recent day loaded by batch_score (champion).';
