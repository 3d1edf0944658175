-- pep store, PostgreSQL schema v3: FCC's answer stored as facts, not only inside the error text.
--
-- * `fcc_info`: FCC's InfoMessage of a rejected attempt (on the identity: of its latest attempt).
-- * audit `fcc_warnings`: FCC's WarningInfo lines of an outcome, joined by '\n' like the
--   identities column (which exists since v1).

ALTER TABLE identities ADD COLUMN fcc_info TEXT;
ALTER TABLE audit ADD COLUMN fcc_info TEXT;
ALTER TABLE audit ADD COLUMN fcc_warnings TEXT NOT NULL DEFAULT '';

-- Rows written before v3: recover the InfoMessage from the stored error text, which ends with
-- "... rejected the identity with status N (NAME): INFO" for every rejection (status <> 0).
UPDATE identities SET fcc_info = substr(last_error, strpos(last_error, '): ') + 3)
    WHERE state = 'failed' AND fcc_status IS NOT NULL AND fcc_status <> 0
        AND strpos(last_error, '): ') > 0;
UPDATE audit SET fcc_info = substr(detail, strpos(detail, '): ') + 3)
    WHERE event = 'failed' AND fcc_status IS NOT NULL AND fcc_status <> 0
        AND strpos(detail, '): ') > 0;
-- ... and the warnings of deployed rows from "ENROLLMENT_ID; FCC warnings: W1; W2".
UPDATE audit SET fcc_warnings =
        replace(substr(detail, strpos(detail, '; FCC warnings: ') + 16), '; ', chr(10))
    WHERE event = 'deployed' AND strpos(detail, '; FCC warnings: ') > 0;
