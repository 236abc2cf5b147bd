-- Core history-store metadata. Event rows live in Parquet objects in the object store; these tables index them.
-- Layout of the objects: events/bucket=BBB/dt=YYYY-MM-DD/part-<batch>-BBB.parquet, bucket = hash32(user_id) % userBuckets,
-- rows sorted by (user_id, ts NULLS FIRST, seq). An object is visible to reads only once its row is in `partitions`.
CREATE TABLE items (
  item_id INTEGER PRIMARY KEY,
  author_id INTEGER,
  tags INTEGER[],
  title VARCHAR,
  attrs JSON
);
CREATE TABLE tag_vocab (
  tag_id INTEGER PRIMARY KEY,
  name VARCHAR NOT NULL UNIQUE
);
-- One row per user with at least one event. ts in epoch ms (NULL when every event of the user lacks a timestamp).
CREATE TABLE users (
  user_id INTEGER PRIMARY KEY,
  bucket INTEGER NOT NULL,
  n_events BIGINT NOT NULL,
  first_ts BIGINT,
  last_ts BIGINT,
  last_seq INTEGER,
  last_ingested_at BIGINT NOT NULL
);
-- Event counts per item (the items that occur in histories; `items` is the catalogue, which can hold more).
CREATE TABLE item_stats (
  item_id INTEGER PRIMARY KEY,
  n_events BIGINT NOT NULL,
  first_ts BIGINT,
  last_ts BIGINT
);
-- The manifest of committed Parquet objects.
CREATE TABLE partitions (
  key VARCHAR PRIMARY KEY,
  bucket INTEGER NOT NULL,
  dt VARCHAR NOT NULL,
  rows BIGINT NOT NULL,
  min_user INTEGER NOT NULL,
  max_user INTEGER NOT NULL,
  bytes BIGINT NOT NULL,
  etag VARCHAR NOT NULL,
  ingest_id VARCHAR NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX partitions_bucket ON partitions (bucket);
-- Files already ingested, by content hash (re-ingesting the same bytes adds nothing).
CREATE TABLE ingest_files (
  sha256 VARCHAR PRIMARY KEY,
  path VARCHAR NOT NULL,
  source VARCHAR NOT NULL,
  rows_loaded BIGINT NOT NULL,
  ingested_at BIGINT NOT NULL
);
