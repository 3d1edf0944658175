-- The factory-floor page counts outcomes since midnight and per minute over the last hour:
-- an index on the time keeps that a range scan however long the audit trail grows.
CREATE INDEX audit_by_time ON audit (at_ms);
