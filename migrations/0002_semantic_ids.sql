-- Semantic IDs (src/tokenizer): one row per tokenizer run; the codes of every item and the codebook centroids of
-- every level are kept per version, so a model trained on version v keeps decoding with v after a re-tokenisation.
CREATE TABLE tokenizer_versions (
  version INTEGER PRIMARY KEY,
  created_at TIMESTAMP NOT NULL,
  levels INTEGER NOT NULL,
  -- Codebook size per level, then the disambiguation level's size (levels + 1 entries).
  sizes INTEGER[] NOT NULL,
  embedding_dim INTEGER NOT NULL,
  items INTEGER NOT NULL,
  params JSON NOT NULL,
  quality JSON NOT NULL,
  is_current BOOLEAN NOT NULL
);
CREATE TABLE item_sid (
  tokenizer_version INTEGER NOT NULL,
  item_id INTEGER NOT NULL,
  -- levels + 1 codes: one per residual level, then the disambiguation code.
  codes INTEGER[] NOT NULL,
  PRIMARY KEY (tokenizer_version, item_id)
);
CREATE TABLE codebooks (
  tokenizer_version INTEGER NOT NULL,
  level INTEGER NOT NULL,
  size INTEGER NOT NULL,
  dim INTEGER NOT NULL,
  -- size × dim row-major.
  centroids FLOAT[] NOT NULL,
  PRIMARY KEY (tokenizer_version, level)
);
-- The item embeddings the codes were computed from (the model may initialise item tables from them).
CREATE TABLE item_embeddings (
  tokenizer_version INTEGER NOT NULL,
  item_id INTEGER NOT NULL,
  -- 0 collaborative+content, 1 content only (no history), 2 collaborative only, 3 random (no signal at all).
  source TINYINT NOT NULL,
  vector FLOAT[] NOT NULL,
  PRIMARY KEY (tokenizer_version, item_id)
);
