-- Nightly monitoring by drift_monitor: one summary row per day, one row per statistical test, realized
-- performance once labels matured, and every retraining decision (triggered or not, and why).

CREATE TABLE IF NOT EXISTS ${schema}.drift_runs (
    ds                     date        NOT NULL PRIMARY KEY,
    model_name             text        NOT NULL,
    model_version          integer     NOT NULL,
    backend                text        NOT NULL CHECK (backend IN ('alibi', 'scipy')),
    drift                  boolean     NOT NULL,
    signals                integer     NOT NULL,
    min_signals            integer     NOT NULL,
    drifted_features       text[]      NOT NULL,
    multivariate_drifted   boolean,
    score_drifted          boolean,
    reference_rows         integer     NOT NULL,
    current_rows           integer     NOT NULL,
    summary                text        NOT NULL,
    report_uri             text,
    mlflow_run_id          text,
    airflow_run_id         text,
    detected_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ${schema}.drift_runs IS 'One row per day checked by drift_monitor: the verdict and why; replaced with the day''s drift_reports rows in one transaction.';
COMMENT ON COLUMN ${schema}.drift_runs.ds IS 'Day whose features and scores were tested (UTC).';
COMMENT ON COLUMN ${schema}.drift_runs.model_version IS 'Model version that scored the day; its reference sample is what the day was tested against.';
COMMENT ON COLUMN ${schema}.drift_runs.backend IS 'Detector implementation: alibi (alibi-detect, BSL 1.1) or scipy (permissive, same univariate decisions).';
COMMENT ON COLUMN ${schema}.drift_runs.drift IS 'true when signals >= min_signals (a drifted feature, a drifted MMD and a drifted score each count one).';
COMMENT ON COLUMN ${schema}.drift_runs.drifted_features IS 'Features whose corrected univariate test drifted.';
COMMENT ON COLUMN ${schema}.drift_runs.multivariate_drifted IS 'MMD test on the numeric features (NULL: not run).';
COMMENT ON COLUMN ${schema}.drift_runs.score_drifted IS 'KS test on the model score distribution (NULL: no scores).';
COMMENT ON COLUMN ${schema}.drift_runs.report_uri IS 'The rendered HTML report (distributions of the most drifted features, p-values).';
COMMENT ON COLUMN ${schema}.drift_runs.mlflow_run_id IS 'MLflow run (monitoring experiment) holding the report and the results as artifacts.';

CREATE TABLE IF NOT EXISTS ${schema}.drift_reports (
    ds              date             NOT NULL REFERENCES ${schema}.drift_runs (ds) ON DELETE CASCADE,
    feature         text             NOT NULL,
    test            text             NOT NULL CHECK (test IN ('ks', 'chi2', 'mmd', 'score_ks')),
    statistic       double precision,
    p_value         double precision,
    threshold       double precision NOT NULL,
    drifted         boolean          NOT NULL,
    model_version   integer          NOT NULL,
    PRIMARY KEY (ds, feature, test)
);
COMMENT ON TABLE ${schema}.drift_reports IS 'One row per day, feature and test run by drift_monitor against the scoring model''s reference sample.';
COMMENT ON COLUMN ${schema}.drift_reports.feature IS 'Feature tested; score for the score test, numeric_features for the multivariate MMD test.';
COMMENT ON COLUMN ${schema}.drift_reports.test IS 'ks (numeric), chi2 (categorical), mmd (multivariate), score_ks (score distribution).';
COMMENT ON COLUMN ${schema}.drift_reports.statistic IS 'KS distance, chi-squared statistic or MMD squared.';
COMMENT ON COLUMN ${schema}.drift_reports.threshold IS 'Level the p-value had to be below: corrected (Bonferroni or FDR) for ks/chi2, drift.p_value otherwise.';
COMMENT ON COLUMN ${schema}.drift_reports.drifted IS 'p_value < threshold.';
COMMENT ON COLUMN ${schema}.drift_reports.p_value IS 'p-value of the test; NULL when it could not be computed (e.g. a constant column on both sides).';
CREATE INDEX IF NOT EXISTS drift_reports_feature ON ${schema}.drift_reports (feature, ds DESC);

CREATE TABLE IF NOT EXISTS ${schema}.model_performance (
    ds                      date             NOT NULL,
    model_name              text             NOT NULL,
    model_version           integer          NOT NULL,
    evaluated_on            date             NOT NULL,
    rows                    bigint           NOT NULL,
    unlabelled_rows         bigint           NOT NULL,
    positives               bigint           NOT NULL,
    flagged                 bigint           NOT NULL,
    threshold               double precision NOT NULL,
    roc_auc                 double precision,
    pr_auc                  double precision,
    precision_at_threshold  double precision,
    recall_at_threshold     double precision,
    brier                   double precision,
    reference_roc_auc       double precision,
    performance_drop        boolean          NOT NULL,
    note                    text,
    airflow_run_id          text,
    computed_at             timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (ds, model_version)
);
COMMENT ON TABLE ${schema}.model_performance IS 'Realized performance of the model that scored a day, once that day''s labels matured (features.label_maturity_days).';
COMMENT ON COLUMN ${schema}.model_performance.ds IS 'The scored transaction day the labels belong to.';
COMMENT ON COLUMN ${schema}.model_performance.evaluated_on IS 'drift_monitor night that computed it (labels reported before the end of that day).';
COMMENT ON COLUMN ${schema}.model_performance.rows IS 'Scored transactions of the day with a label.';
COMMENT ON COLUMN ${schema}.model_performance.unlabelled_rows IS 'Scored transactions still without a label (excluded).';
COMMENT ON COLUMN ${schema}.model_performance.reference_roc_auc IS 'The model''s holdout ROC AUC at training time.';
COMMENT ON COLUMN ${schema}.model_performance.performance_drop IS 'roc_auc fell at least drift.performance_tolerance below reference_roc_auc.';
COMMENT ON COLUMN ${schema}.model_performance.note IS 'Why an AUC is missing (e.g. a single class), when it is.';

CREATE TABLE IF NOT EXISTS ${schema}.retraining_decisions (
    ds                 date        NOT NULL PRIMARY KEY,
    model_name         text        NOT NULL,
    model_version      integer,
    triggered          boolean     NOT NULL,
    reason             text        NOT NULL,
    drifted_features   text[]      NOT NULL,
    train_run_id       text,
    airflow_run_id     text,
    decided_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ${schema}.retraining_decisions IS 'One row per drift_monitor night: whether train_model was triggered, and why (or why not: cooldown, a running training, no drift).';
COMMENT ON COLUMN ${schema}.retraining_decisions.ds IS 'The night (logical date) decided on; the cooldown counts in these dates, so a backfill behaves like the nights it replays.';
COMMENT ON COLUMN ${schema}.retraining_decisions.train_run_id IS 'run_id of the train_model run triggered (NULL when not triggered).';
CREATE INDEX IF NOT EXISTS retraining_decisions_triggered ON ${schema}.retraining_decisions (model_name, ds DESC) WHERE triggered;
