-- Core history-store metadata. Event rows live in Parquet objects; these tables index them.
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
