-- Each model version decides with its own threshold, chosen on its validation data from the alert policy
-- (scoring.threshold_policy). Every scored day records its flag rate against the band the policy expects, and
-- whether it left that band (an alert); daily_alerts puts it next to the realized precision once labels matured.

ALTER TABLE ${schema}.scoring_runs
    ADD COLUMN IF NOT EXISTS threshold_policy     text,
    ADD COLUMN IF NOT EXISTS alert_rate           double precision,
    ADD COLUMN IF NOT EXISTS expected_alert_rate  double precision,
    ADD COLUMN IF NOT EXISTS alert_band_low       double precision,
    ADD COLUMN IF NOT EXISTS alert_band_high      double precision,
    ADD COLUMN IF NOT EXISTS alert_out_of_band    boolean,
    ADD COLUMN IF NOT EXISTS alert_note           text;

COMMENT ON COLUMN ${schema}.scoring_runs.threshold IS 'Decision threshold of the model version that scored the day (chosen on its validation data by threshold_policy; scoring.threshold for versions recorded without one).';
COMMENT ON COLUMN ${schema}.scoring_runs.threshold_policy IS 'How the version''s threshold was chosen: alert_budget, target_precision or fixed (NULL: recorded before policies).';
COMMENT ON COLUMN ${schema}.scoring_runs.alert_rate IS 'rows_flagged / rows_scored of the day.';
COMMENT ON COLUMN ${schema}.scoring_runs.expected_alert_rate IS 'The version''s flag rate on its validation data at its threshold.';
COMMENT ON COLUMN ${schema}.scoring_runs.alert_band_low IS 'expected_alert_rate / band_factor: a day flagging less raises an alert.';
COMMENT ON COLUMN ${schema}.scoring_runs.alert_band_high IS 'expected_alert_rate * band_factor: a day flagging more raises an alert.';
COMMENT ON COLUMN ${schema}.scoring_runs.alert_out_of_band IS 'true when alert_rate left [alert_band_low, alert_band_high] (an alert was raised); NULL without a band.';
COMMENT ON COLUMN ${schema}.scoring_runs.alert_note IS 'The alert policy check in words.';

CREATE OR REPLACE VIEW ${schema}.daily_alerts AS
SELECT r.ds,
       r.model_name,
       r.model_version,
       r.threshold,
       r.threshold_policy,
       r.rows_scored,
       r.rows_flagged,
       r.alert_rate,
       r.expected_alert_rate,
       r.alert_band_low,
       r.alert_band_high,
       r.alert_out_of_band,
       p.rows AS labelled_rows,
       p.positives AS frauds,
       p.precision_at_threshold AS realized_precision,
       p.recall_at_threshold AS realized_recall
FROM ${schema}.scoring_runs r
LEFT JOIN ${schema}.model_performance p ON p.ds = r.ds AND p.model_version = r.model_version
WHERE r.role = 'champion';
COMMENT ON VIEW ${schema}.daily_alerts IS 'Per scored day (champion): the flag rate against the alert policy''s band, and the realized precision and recall once the day''s labels matured (NULL until then).';

-- The gate's slices over time: realized metrics per slice and group of each scored day, once its labels matured.
CREATE TABLE IF NOT EXISTS ${schema}.model_performance_slices (
    ds                   date             NOT NULL,
    model_name           text             NOT NULL,
    model_version        integer          NOT NULL,
    evaluated_on         date             NOT NULL,
    slice                text             NOT NULL,
    grp                  text             NOT NULL,
    rows                 bigint           NOT NULL,
    positives            bigint           NOT NULL,
    threshold            double precision NOT NULL,
    roc_auc              double precision,
    pr_auc               double precision,
    recall_at_threshold  double precision,
    fpr_at_threshold     double precision,
    supported            boolean          NOT NULL,
    computed_at          timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (ds, model_version, slice, grp)
);
COMMENT ON TABLE ${schema}.model_performance_slices IS 'Realized performance of the model that scored a day, per slice (gate.slices) and group, once the day''s labels matured; replaced per day and version.';
COMMENT ON COLUMN ${schema}.model_performance_slices.slice IS 'Slice name from gate.slices.by (e.g. country, channel, amount_band).';
COMMENT ON COLUMN ${schema}.model_performance_slices.grp IS 'The group within the slice: the column''s value, or its band such as [20, 100).';
COMMENT ON COLUMN ${schema}.model_performance_slices.supported IS 'The group had gate.slices.min_rows labelled rows and min_positives frauds: enough to read its metrics.';
COMMENT ON COLUMN ${schema}.model_performance_slices.threshold IS 'The threshold the day was scored with (the version''s own).';
