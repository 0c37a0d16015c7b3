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
