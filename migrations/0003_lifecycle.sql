-- Lifecycle compression runs (jobs/nightly.ts). One row per run of `gems compress` / the nightly job, per shard.
-- Progress checkpoints and the job lock are files under <dataDir>/runs/compress/ (see jobs/nightly.ts): they must
-- be writable while another process holds this DuckDB file.
CREATE TABLE compression_runs (
  run_id VARCHAR PRIMARY KEY,
  started_at TIMESTAMP NOT NULL,
  finished_at TIMESTAMP,
  -- running | completed | interrupted | abandoned
  status VARCHAR NOT NULL,
  shard_index INTEGER NOT NULL,
  shard_count INTEGER NOT NULL,
  compressor_version VARCHAR NOT NULL,
  full_recompression BOOLEAN NOT NULL,
  -- Users whose memory was written (full + incremental), skipped as unchanged, and failed.
  users INTEGER NOT NULL DEFAULT 0,
  users_full INTEGER NOT NULL DEFAULT 0,
  users_incremental INTEGER NOT NULL DEFAULT 0,
  users_unchanged INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  -- Lifecycle events folded into memories.
  events BIGINT NOT NULL DEFAULT 0,
  seconds DOUBLE,
  events_per_s DOUBLE,
  resumes INTEGER NOT NULL DEFAULT 0,
  host VARCHAR,
  pid INTEGER
);
CREATE TABLE compression_failures (
  run_id VARCHAR NOT NULL,
  user_id INTEGER NOT NULL,
  reason VARCHAR NOT NULL,
  failed_at TIMESTAMP NOT NULL,
  PRIMARY KEY (run_id, user_id)
);
