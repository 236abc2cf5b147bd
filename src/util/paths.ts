// Where the repository's own files (migrations/, proto/, data/) are, whether the code runs from src/ under tsx or
// from dist/src/ after `npm run build`: the nearest folder above this file that holds gems' package.json.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | null = null;

export function repoRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'gems') return (cached = dir);
    dir = dirname(dir);
  }
  throw new Error(`cannot find gems' package.json above ${fileURLToPath(import.meta.url)}`);
}
