// Opens the memory store that config.lifecycle.memoryStore names: lmdb (default, a file under the data dir) or
// redis (config.lifecycle.redisUrl). Every reader and writer of memories goes through this.
import { join } from 'node:path';
import { resolvedPaths, type GemsConfig } from '../config/config.js';
import type { MemoryStore } from './memory.js';
import { LmdbMemoryStore } from './lmdbMemoryStore.js';
import { RedisMemoryStore } from './redisMemoryStore.js';

/** The lmdb file of a configuration: `<dataDir>/memories/memories.mdb`. */
export function lmdbMemoryPath(config: GemsConfig): string {
  return join(resolvedPaths(config).memories, 'memories.mdb');
}

export async function openMemoryStore(config: GemsConfig): Promise<MemoryStore> {
  const { memoryStore, dtype, redisUrl } = config.lifecycle;
  switch (memoryStore) {
    case 'lmdb':
      return new LmdbMemoryStore({ path: lmdbMemoryPath(config), dtype });
    case 'redis':
      return RedisMemoryStore.open({ url: redisUrl, dtype });
    default:
      throw new Error(`config lifecycle.memoryStore: '${String(memoryStore)}' is not lmdb|redis`);
  }
}
