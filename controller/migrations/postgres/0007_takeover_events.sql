-- The event that says a controller took a task over (its previous owner's lease ran
-- out) names the new owner by its advertised address; NULL on every other event. It is
-- a task event with the status RUNNING, like a reopening, and this is what tells the two
-- apart.
ALTER TABLE task_events ADD COLUMN taken_over_by TEXT;
