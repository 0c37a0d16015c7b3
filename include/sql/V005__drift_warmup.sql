-- Effect sizes and warm-up. A test drifts when its p-value is below its threshold and its effect (KS or total
-- variation distance) reaches drift.min_effect. A history feature whose window was not yet full on the
-- reference's first day is tested and reported but is no signal (it moves with the lake's age, not with
-- behaviour), and while one is, neither are the multivariate and score tests that mix it in.

ALTER TABLE ${schema}.drift_reports ADD COLUMN IF NOT EXISTS effect double precision;
COMMENT ON COLUMN ${schema}.drift_reports.effect IS 'KS distance (numeric features, score) or total variation distance of the category shares (categorical); NULL for mmd. drifted needs p_value < threshold and effect >= drift.min_effect.';
COMMENT ON COLUMN ${schema}.drift_reports.drifted IS 'p_value < threshold, and effect >= drift.min_effect where an effect is measured.';

ALTER TABLE ${schema}.drift_reports ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN ${schema}.drift_reports.counted IS 'false: no signal that night, because the feature''s history window was still filling on the reference''s first day (or, for mmd and score_ks, because such a feature is mixed in). Tested and reported all the same.';

ALTER TABLE ${schema}.drift_runs ADD COLUMN IF NOT EXISTS warming_features text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN ${schema}.drift_runs.warming_features IS 'Features tested but not counted that night: their history windows were still filling (drift.count_warming_features).';
