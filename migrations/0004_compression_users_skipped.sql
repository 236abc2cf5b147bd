-- Users of a compression run with an empty lifecycle segment (≤ streams.tMid events): no memory is written for
-- them. Until this column existed the count was only in the run's log and summary.
ALTER TABLE compression_runs ADD COLUMN users_skipped INTEGER DEFAULT 0;
