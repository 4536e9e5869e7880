-- "What did orch last announce for this project" (storage/postgres_coordination.py,
-- announced_statuses) is read when a replica takes a project over.  It used to order by
-- ts, the writing replica's clock: a replica running minutes fast made its old
-- announcement look newer than a correct replica's later one.  seq is drawn in commit
-- order (storage/postgres_sql.py, insert_events), so the last announcement is the highest
-- seq; this index answers that per project without sorting its whole history.
-- Mirrored by migrations/sqlite/0013.
CREATE INDEX events_project_type_seq ON events (project, type, seq);
