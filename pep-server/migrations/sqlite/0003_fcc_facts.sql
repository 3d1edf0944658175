-- pep store, SQLite schema v3: FCC's answer stored as facts, not only inside the error text.
--
-- * `fcc_info`: FCC's InfoMessage of a rejected attempt (on the identity: of its latest attempt).
-- * audit `fcc_warnings`: FCC's WarningInfo lines of an outcome, joined by '\n' like the
--   identities column (which exists since v1).
-- * identities `server_id`: always NULL here (one server per SQLite file); it exists so that both
--   backends run the same SQL text.

ALTER TABLE identities ADD COLUMN server_id TEXT;
ALTER TABLE identities ADD COLUMN fcc_info TEXT;
ALTER TABLE audit ADD COLUMN fcc_info TEXT;
ALTER TABLE audit ADD COLUMN fcc_warnings TEXT NOT NULL DEFAULT '';

-- Rows written before v3: recover the InfoMessage from the stored error text, which ends with
-- "... rejected the identity with status N (NAME): INFO" for every rejection (status <> 0).
UPDATE identities SET fcc_info = substr(last_error, instr(last_error, '): ') + 3)
    WHERE state = 'failed' AND fcc_status IS NOT NULL AND fcc_status <> 0
        AND instr(last_error, '): ') > 0;
UPDATE audit SET fcc_info = substr(detail, instr(detail, '): ') + 3)
    WHERE event = 'failed' AND fcc_status IS NOT NULL AND fcc_status <> 0
        AND instr(detail, '): ') > 0;
-- ... and the warnings of deployed rows from "ENROLLMENT_ID; FCC warnings: W1; W2".
UPDATE audit SET fcc_warnings =
        replace(substr(detail, instr(detail, '; FCC warnings: ') + 16), '; ', char(10))
    WHERE event = 'deployed' AND instr(detail, '; FCC warnings: ') > 0;
