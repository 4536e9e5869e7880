-- The daily digest (PostgreSQL; mirrored by migrations/sqlite/0011).  Why each change
-- exists: storage/report_store.py (digest_runs) and storage/slack_store.py (the two new
-- Slack outbox kinds).

-- One row per orchestrator group and local day: the digest is queued once fleet-wide.
CREATE TABLE digest_runs (
    grp        text        NOT NULL,
    day        text        NOT NULL,             -- the group's local date, YYYY-MM-DD
    state      text        NOT NULL CHECK (state IN ('claimed', 'queued')),
    claimed_by text        NOT NULL,
    claimed_at timestamptz NOT NULL,
    queued_at  timestamptz,
    PRIMARY KEY (grp, day)
);

-- Report queries: approvals decided in a window (actions and analyses have theirs).
CREATE INDEX approvals_decided ON approvals (decided_at) WHERE decided_at IS NOT NULL;

-- 'message': a message of its own (the digest); 'upload': a file shared after its message.
ALTER TABLE slack_outbox DROP CONSTRAINT slack_outbox_kind_check;
ALTER TABLE slack_outbox ADD CONSTRAINT slack_outbox_kind_check
    CHECK (kind IN ('post_card', 'update_card', 'thread_reply', 'storm', 'message', 'upload'));
