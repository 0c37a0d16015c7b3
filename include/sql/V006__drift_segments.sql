-- Segment tests. A fraud pattern in about 1% of the night's traffic moves no population's distribution, so
-- drift.segments names slices of traffic (card testing, rapid-fire cards, high scores) whose share of the
-- night is tested against the reference's with a chi-squared test; a segment drifts when its share grows by
-- at least drift.min_segment_excess, and each drifted segment is one signal.

ALTER TABLE ${schema}.drift_reports DROP CONSTRAINT IF EXISTS drift_reports_test_check;
ALTER TABLE ${schema}.drift_reports
    ADD CONSTRAINT drift_reports_test_check CHECK (test IN ('ks', 'chi2', 'mmd', 'score_ks', 'segment'));
COMMENT ON COLUMN ${schema}.drift_reports.test IS 'ks (numeric), chi2 (categorical), mmd (multivariate), score_ks (score distribution), segment (share of a drift.segments slice of traffic).';
COMMENT ON COLUMN ${schema}.drift_reports.feature IS 'Feature tested; score for the score test, numeric_features for the multivariate MMD test, the segment''s name for a segment test.';
COMMENT ON COLUMN ${schema}.drift_reports.effect IS 'KS distance (numeric features, score), total variation distance of the category shares (categorical), or for a segment its share of the day less its share of the reference; NULL for mmd. drifted needs p_value < threshold and effect >= drift.min_effect (drift.min_segment_excess for a segment).';

ALTER TABLE ${schema}.drift_runs ADD COLUMN IF NOT EXISTS drifted_segments text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN ${schema}.drift_runs.drifted_segments IS 'drift.segments whose share of the day grew significantly, by at least drift.min_segment_excess (each one signal).';
COMMENT ON COLUMN ${schema}.drift_runs.drift IS 'true when signals >= min_signals (a drifted feature, a grown segment, a drifted MMD and a drifted score each count one).';
