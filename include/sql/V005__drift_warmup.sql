-- Warm-up: a history feature whose window was not yet full on the reference's first day is tested and
-- reported, but counts as no drift signal (it moves with the lake's age, not with behaviour).

ALTER TABLE ${schema}.drift_reports ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN ${schema}.drift_reports.counted IS 'false: the feature''s history window was still filling on the reference''s first day; tested and reported, but no signal.';

ALTER TABLE ${schema}.drift_runs ADD COLUMN IF NOT EXISTS warming_features text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN ${schema}.drift_runs.warming_features IS 'Features tested but not counted that night: their history windows were still filling (drift.count_warming_features).';
