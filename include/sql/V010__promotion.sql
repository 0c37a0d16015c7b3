-- Promotion on evidence.
-- 1. A pattern drift (a segment grew, the realized performance fell) is learnt only from its labels: its
--    retraining is scheduled for when the drifted night's labels have matured (scheduled_retrainings).
-- 2. Under promotion.policy shadow_first the gate's winner gets alias `shadow`; each night it is compared with
--    the champion on the same matured transactions (shadow_evaluations), and a winner raises a promotion
--    request (promotion_requests) that a person approves in Airflow.

ALTER TABLE ${schema}.retraining_decisions
    ADD COLUMN IF NOT EXISTS drift_kind    text,
    ADD COLUMN IF NOT EXISTS scheduled_for date;
COMMENT ON COLUMN ${schema}.retraining_decisions.drift_kind IS 'covariate (the inputs moved: retrain at once), pattern (a segment grew or realized performance fell: retrain once its labels matured), both, or NULL.';
COMMENT ON COLUMN ${schema}.retraining_decisions.scheduled_for IS 'The night a pattern drift''s retraining is due (ds + features.label_maturity_days); NULL when none was scheduled.';

CREATE TABLE IF NOT EXISTS ${schema}.scheduled_retrainings (
    id             bigserial   PRIMARY KEY,
    model_name     text        NOT NULL,
    drift_ds       date        NOT NULL,
    due_on         date        NOT NULL,
    reason         text        NOT NULL,
    state          text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'fired', 'cancelled')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    settled_at     timestamptz,
    settled_by     text,
    note           text,
    UNIQUE (model_name, drift_ds)
);
COMMENT ON TABLE ${schema}.scheduled_retrainings IS 'Retrainings a pattern drift asked for, due when the drifted night''s labels have matured; drift_monitor fires them on their night (cooldown and running trainings permitting).';
COMMENT ON COLUMN ${schema}.scheduled_retrainings.due_on IS 'drift_ds + features.label_maturity_days: the first night whose training cut-off holds the drifted night''s matured labels.';
COMMENT ON COLUMN ${schema}.scheduled_retrainings.state IS 'pending (waiting for due_on), fired (a confirmed retraining with a cut-off past due_on covered it: settled_by names the train_model run), cancelled (by an operator: note says why).';
CREATE INDEX IF NOT EXISTS scheduled_retrainings_pending
    ON ${schema}.scheduled_retrainings (model_name, due_on) WHERE state = 'pending';

-- The shadow alias, and removals (a retired shadow): action 'remove' leaves the alias pointing nowhere.
ALTER TABLE ${schema}.model_alias_history DROP CONSTRAINT IF EXISTS model_alias_history_alias_check;
ALTER TABLE ${schema}.model_alias_history
    ADD CONSTRAINT model_alias_history_alias_check CHECK (alias IN ('champion', 'challenger', 'shadow'));
ALTER TABLE ${schema}.model_alias_history
    ADD COLUMN IF NOT EXISTS action      text NOT NULL DEFAULT 'move' CHECK (action IN ('move', 'remove')),
    ADD COLUMN IF NOT EXISTS approved_by text,
    ADD COLUMN IF NOT EXISTS approved_at timestamptz;
COMMENT ON COLUMN ${schema}.model_alias_history.action IS 'move: the alias points to version after the row; remove: the alias was taken off version (a retired shadow).';
COMMENT ON COLUMN ${schema}.model_alias_history.approved_by IS 'The person who approved a promotion in Airflow (human-in-the-loop task), as Airflow names the user.';
COMMENT ON COLUMN ${schema}.model_alias_history.approved_at IS 'When that person answered.';

CREATE TABLE IF NOT EXISTS ${schema}.shadow_evaluations (
    ds                date             NOT NULL,
    model_name        text             NOT NULL,
    shadow_version    integer          NOT NULL,
    champion_version  integer          NOT NULL,
    evaluated_on      date             NOT NULL,
    slice             text             NOT NULL,
    grp               text             NOT NULL,
    rows              bigint           NOT NULL,
    positives         bigint           NOT NULL,
    shadow_roc_auc    double precision,
    champion_roc_auc  double precision,
    difference        double precision,
    ci_low            double precision,
    ci_high           double precision,
    supported         boolean          NOT NULL,
    computed_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (ds, model_name, shadow_version, slice, grp)
);
COMMENT ON TABLE ${schema}.shadow_evaluations IS 'The shadow and the champion on the same matured transactions of a scored day (paired), overall (slice = all) and per gate.slices group; the interval is a paired bootstrap of the ROC AUC difference.';
COMMENT ON COLUMN ${schema}.shadow_evaluations.difference IS 'shadow_roc_auc - champion_roc_auc on the same labelled transactions.';
COMMENT ON COLUMN ${schema}.shadow_evaluations.ci_low IS 'Lower bound of the paired bootstrap interval (promotion.confidence) of the difference; NULL for unsupported groups.';

CREATE TABLE IF NOT EXISTS ${schema}.promotion_requests (
    id                bigserial   PRIMARY KEY,
    model_name        text        NOT NULL,
    version           integer     NOT NULL,
    champion_version  integer,
    state             text        NOT NULL DEFAULT 'open'
                      CHECK (state IN ('open', 'approved', 'rejected', 'timed_out', 'retired')),
    requested_at      timestamptz NOT NULL DEFAULT now(),
    requested_on      date        NOT NULL,
    evidence          jsonb       NOT NULL,
    airflow_run_id    text,
    decided_at        timestamptz,
    decided_by        text,
    note              text,
    UNIQUE (model_name, version)
);
COMMENT ON TABLE ${schema}.promotion_requests IS 'One request per shadow version that beat the champion on matured labels: open until a person approves (promoted) or rejects it in the promote_model DAG, or it times out.';
COMMENT ON COLUMN ${schema}.promotion_requests.evidence IS 'The paired comparison the request rests on: days, rows, frauds, ROC AUC of both, the difference and its interval, per slice.';
COMMENT ON COLUMN ${schema}.promotion_requests.decided_by IS 'The approver or rejecter as Airflow names the user; the system for a timeout or a retired shadow.';
