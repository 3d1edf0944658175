-- pep store, PostgreSQL schema v10: the claim sender reads only the rows still to send.
--
-- `claims_due (state, next_attempt_at)` gave the due rows of two states, which the sender's scan
-- then sorted by id, the whole backlog at every round. This partial index holds only the open
-- rows, in the order the sender takes them (`sql::TAKE_CLAIMS_*`: due time, then id), so a round
-- reads as many index entries as it takes rows.
CREATE INDEX claims_open ON claims (next_attempt_at, id) WHERE state IN ('pending', 'retrying');
DROP INDEX claims_due;
