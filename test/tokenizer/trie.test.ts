import { describe, expect, it } from 'vitest';
import { CodeTrie } from '../../src/tokenizer/trie.js';
import { Rng } from '../../src/util/random.js';

/** n distinct random codes of `depth` levels, each level in [0, size). */
function randomCodes(n: number, depth: number, size: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  const seen = new Set<string>();
  const out: number[] = [];
  while (seen.size < n) {
    const c = Array.from({ length: depth }, () => rng.int(size));
    const key = c.join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(...c);
  }
  return Int32Array.from(out);
}

describe('code trie', () => {
  const n = 2000;
  const depth = 4;
  const codes = randomCodes(n, depth, 12, 5);
  const itemIds = Int32Array.from({ length: n }, (_, i) => 7 * i + 1);
  const trie = CodeTrie.build(codes, n, depth, itemIds);

  it('returns exactly the existing continuations of every prefix, sorted', () => {
    // Brute force: prefix → set of next codes.
    const expected = new Map<string, Set<number>>();
    for (let i = 0; i < n; i++) {
      for (let l = 0; l < depth; l++) {
        const key = Array.from(codes.subarray(i * depth, i * depth + l)).join(',');
        let s = expected.get(key);
        if (!s) expected.set(key, (s = new Set()));
        s.add(codes[i * depth + l]!);
      }
    }
    for (const [key, set] of expected) {
      const prefix = key === '' ? [] : key.split(',').map(Number);
      expect(Array.from(trie.next(prefix))).toEqual([...set].sort((a, b) => a - b));
    }
    // Node count = root + distinct prefixes of length 1..depth.
    expect(trie.nodes).toBe(1 + [...expected.keys()].filter((k) => k !== '').length + n);
  });

  it('maps every full code to its item and rejects codes that do not exist', () => {
    for (let i = 0; i < n; i++) expect(trie.item(codes.subarray(i * depth, i * depth + depth))).toBe(itemIds[i]);
    expect(trie.item([99, 0, 0, 0])).toBe(-1);
    expect(trie.item([codes[0]!, codes[1]!])).toBe(-1); // a prefix is not an item
    expect(Array.from(trie.next([99]))).toEqual([]);
    expect(Array.from(trie.next(codes.subarray(0, depth)))).toEqual([]); // complete code: nothing follows
  });

  it('steps node by node and fills a logits mask for beam search', () => {
    let node = CodeTrie.ROOT;
    for (let l = 0; l < depth; l++) {
      const mask = new Float32Array(12);
      trie.fillMask(node, mask);
      const allowed = Array.from(mask.keys()).filter((c) => mask[c] === 0);
      expect(allowed).toEqual(Array.from(trie.children(node).codes));
      node = trie.child(node, codes[l]!);
      expect(node).toBeGreaterThan(0);
      expect(trie.nodeDepth[node]).toBe(l + 1);
    }
    expect(trie.leafItem[node]).toBe(itemIds[0]);
    expect(trie.child(CodeTrie.ROOT, 12)).toBe(-1);
  });

  it('refuses two items with the same full code', () => {
    expect(() => CodeTrie.build(Int32Array.from([1, 2, 1, 2]), 2, 2, Int32Array.from([5, 6]))).toThrow(/2 items share the full code \[1,2\]/);
  });
});
