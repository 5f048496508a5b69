-- Only browser sessions carry a browser token. The index of 0014 also held
-- an entry for every app's session (NULL); it now holds the tokens alone.
-- Lookups by token (`browser_token_hash = $1`) imply NOT NULL, so they
-- still use it.
DROP INDEX sessions_by_browser_token;
CREATE UNIQUE INDEX sessions_by_browser_token ON sessions (browser_token_hash)
    WHERE browser_token_hash IS NOT NULL;
