// The DuckDB database that holds gems' metadata and indexes (users, items, partitions manifest, Semantic IDs,
// runs…). Event rows themselves live in Parquet objects (see src/data/historyStore.ts). Opening applies the
// numbered migrations in migrations/ (each in a transaction, recorded in schema_migrations) and refuses a
// database that has a migration this build does not know.
//
// DuckDB lets one process hold a file read-write at a time: long-lived processes should open, work and close
// (or open read-only), so the CLI, the nightly job and the services can share a data dir.
import { readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { repoRoot } from '../util/paths.js';
import { DuckDBConnection, DuckDBInstance, type DuckDBValue } from '@duckdb/node-api';

export const MIGRATIONS_DIR = join(repoRoot(), 'migrations');

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export class MigrationError extends Error {
  override name = 'MigrationError';
}

export function readMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const out: Migration[] = [];
  for (const f of readdirSync(dir).sort()) {
    const m = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(f);
    if (!m) continue;
    out.push({ version: Number(m[1]), name: m[2]!, sql: readFileSync(join(dir, f), 'utf8') });
  }
  for (let i = 1; i < out.length; i++) {
    if (out[i]!.version === out[i - 1]!.version) throw new MigrationError(`two migrations numbered ${out[i]!.version} in ${dir}`);
  }
  return out;
}

export type Params = DuckDBValue[] | Record<string, DuckDBValue>;

export class Database {
  private constructor(
    readonly path: string,
    private readonly instance: DuckDBInstance,
    readonly conn: DuckDBConnection,
  ) {}

  /** Opens (creating if needed) and migrates the database. `readOnly` skips migrations but checks the version. */
  static async open(path: string, opts: { readOnly?: boolean; migrationsDir?: string } = {}): Promise<Database> {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    let instance: DuckDBInstance;
    try {
      instance = await DuckDBInstance.create(path, opts.readOnly ? { access_mode: 'READ_ONLY' } : {});
    } catch (e) {
      const msg = (e as Error).message;
      if (/lock/i.test(msg)) throw new Error(`DuckDB file ${path} is locked by another process (${msg})`, { cause: e });
      throw e;
    }
    const conn = await instance.connect();
    const db = new Database(path, instance, conn);
    await db.migrate(readMigrations(opts.migrationsDir), opts.readOnly === true);
    return db;
  }

  /** Runs one statement (or several, without parameters). */
  async run(sql: string, params?: Params): Promise<void> {
    await this.conn.run(sql, params);
  }

  /** Rows as plain JS objects (BIGINT → bigint, lists → arrays, timestamps → Date). */
  async rows<T = Record<string, unknown>>(sql: string, params?: Params): Promise<T[]> {
    const reader = await this.conn.runAndReadAll(sql, params);
    return reader.getRowObjectsJS() as T[];
  }

  async one<T = Record<string, unknown>>(sql: string, params?: Params): Promise<T | undefined> {
    return (await this.rows<T>(sql, params))[0];
  }

  /** Runs `fn` in a transaction: committed if it returns, rolled back if it throws. */
  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    await this.conn.run('BEGIN TRANSACTION');
    try {
      const out = await fn();
      await this.conn.run('COMMIT');
      return out;
    } catch (e) {
      await this.conn.run('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }

  private async migrate(known: Migration[], readOnly: boolean): Promise<void> {
    const hasTable = await this.rows(`SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations'`);
    if (hasTable.length === 0) {
      if (readOnly) throw new MigrationError(`database ${this.path} has no schema; open it read-write once to migrate`);
      await this.run(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)`);
    }
    const applied = await this.rows<{ version: number; name: string }>(`SELECT version, name FROM schema_migrations ORDER BY version`);
    const knownByVersion = new Map(known.map((m) => [m.version, m]));
    for (const a of applied) {
      if (!knownByVersion.has(a.version)) {
        throw new MigrationError(
          `database ${this.path} has migration ${String(a.version).padStart(4, '0')}_${a.name}, which this build does not know: ` +
            `it was written by a newer gems; upgrade gems or use another data dir`,
        );
      }
    }
    const done = new Set(applied.map((a) => a.version));
    for (const m of known) {
      if (done.has(m.version)) continue;
      if (readOnly) throw new MigrationError(`database ${this.path} lacks migration ${m.version}_${m.name}; open it read-write once to migrate`);
      await this.transaction(async () => {
        await this.conn.run(m.sql);
        await this.run(`INSERT INTO schema_migrations VALUES ($1, $2, now()::TIMESTAMP)`, [m.version, m.name]);
      });
    }
  }

  close(): void {
    this.conn.closeSync();
    this.instance.closeSync();
  }
}
