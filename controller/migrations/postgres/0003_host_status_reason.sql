-- Why the host's agent could not be reached at its last check, in plain words (a refused
-- certificate, a closed port, no answer in time): cleared by the next answer.
ALTER TABLE hosts ADD COLUMN status_reason TEXT;
