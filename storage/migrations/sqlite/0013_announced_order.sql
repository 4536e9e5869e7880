-- announced_statuses orders by seq (commit order), not ts (the writer's clock): see
-- migrations/postgres/0013 for why.
CREATE INDEX events_project_type_seq ON events (project, type, seq);
