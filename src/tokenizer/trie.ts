// Prefix trie of the Semantic IDs that exist, for constrained beam search: from a node (a code prefix) the valid
// next codes, and from a full code the item. Nodes are numbered breadth-first so each node's children are a
// contiguous, code-sorted run: `children(node)` is two subarray views and `child(node, code)` a binary search —
// no per-node objects, a few typed arrays in total.

export class CodeTrie {
  /** Code on the edge into each node (node 0, the root, has -1). */
  readonly nodeCode: Int32Array;
  /** First child's node id and number of children, per node. */
  readonly firstChild: Int32Array;
  readonly childCount: Int32Array;
  /** For nodes at full depth, the item id; -1 elsewhere. */
  readonly leafItem: Int32Array;
  readonly nodeDepth: Uint8Array;
  static readonly ROOT = 0;

  private constructor(
    readonly depth: number,
    nodeCode: Int32Array,
    firstChild: Int32Array,
    childCount: Int32Array,
    leafItem: Int32Array,
    nodeDepth: Uint8Array,
  ) {
    this.nodeCode = nodeCode;
    this.firstChild = firstChild;
    this.childCount = childCount;
    this.leafItem = leafItem;
    this.nodeDepth = nodeDepth;
  }

  /** Builds the trie from n×depth row-major codes (unique rows) and their item ids. */
  static build(codes: Int32Array, n: number, depth: number, itemIds: Int32Array): CodeTrie {
    if (codes.length !== n * depth) throw new Error(`trie: codes have ${codes.length} values, expected ${n}×${depth}`);
    const order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => {
      for (let l = 0; l < depth; l++) {
        const diff = codes[a * depth + l]! - codes[b * depth + l]!;
        if (diff !== 0) return diff;
      }
      return 0;
    });
    const nodeCode: number[] = [-1];
    const firstChild: number[] = [0];
    const childCount: number[] = [0];
    const leafItem: number[] = [-1];
    const nodeDepth: number[] = [0];
    // Ranges [start, end) of `order` covered by each node of the current depth, breadth-first.
    let frontier: Array<[number, number, number]> = [[0, 0, n]];
    for (let l = 0; l < depth; l++) {
      const next: Array<[number, number, number]> = [];
      for (const [node, start, end] of frontier) {
        firstChild[node] = nodeCode.length;
        let s = start;
        while (s < end) {
          const code = codes[order[s]! * depth + l]!;
          let e = s + 1;
          while (e < end && codes[order[e]! * depth + l] === code) e++;
          const id = nodeCode.length;
          nodeCode.push(code);
          firstChild.push(0);
          childCount.push(0);
          nodeDepth.push(l + 1);
          if (l === depth - 1) {
            if (e - s > 1) throw new Error(`trie: ${e - s} items share the full code [${Array.from(codes.subarray(order[s]! * depth, order[s]! * depth + depth)).join(',')}]`);
            leafItem.push(itemIds[order[s]!]!);
          } else leafItem.push(-1);
          next.push([id, s, e]);
          s = e;
        }
        childCount[node] = nodeCode.length - firstChild[node]!;
      }
      frontier = next;
    }
    return new CodeTrie(depth, Int32Array.from(nodeCode), Int32Array.from(firstChild), Int32Array.from(childCount), Int32Array.from(leafItem), Uint8Array.from(nodeDepth));
  }

  get nodes(): number {
    return this.nodeCode.length;
  }

  /** The valid next codes after `node` (sorted ascending) and the matching child nodes; views, do not modify. */
  children(node: number): { codes: Int32Array; nodes: { start: number; count: number } } {
    const start = this.firstChild[node]!;
    const count = this.childCount[node]!;
    return { codes: this.nodeCode.subarray(start, start + count), nodes: { start, count } };
  }

  /** The child of `node` reached by `code`, or -1 when that continuation does not exist. */
  child(node: number, code: number): number {
    let lo = this.firstChild[node]!;
    let hi = lo + this.childCount[node]! - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.nodeCode[mid]!;
      if (c === code) return mid;
      if (c < code) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Node of a prefix, or -1 when no item has it. */
  nodeOf(prefix: ArrayLike<number>): number {
    if (prefix.length > this.depth) return -1;
    let node = CodeTrie.ROOT;
    for (let i = 0; i < prefix.length && node >= 0; i++) node = this.child(node, prefix[i]!);
    return node;
  }

  /** Valid next codes after a prefix (empty when the prefix does not exist or is complete). */
  next(prefix: ArrayLike<number>): Int32Array {
    const node = this.nodeOf(prefix);
    return node < 0 ? new Int32Array(0) : this.children(node).codes;
  }

  /** The item with this full code, or -1. */
  item(codes: ArrayLike<number>): number {
    if (codes.length !== this.depth) return -1;
    const node = this.nodeOf(codes);
    return node < 0 ? -1 : this.leafItem[node]!;
  }

  /** Writes `allowed` at the valid next codes of `node` and `blocked` elsewhere (a logits mask of length ≥ size). */
  fillMask(node: number, out: Float32Array, allowed = 0, blocked = -Infinity): void {
    out.fill(blocked);
    const { codes } = this.children(node);
    for (const c of codes) out[c] = allowed;
  }
}
