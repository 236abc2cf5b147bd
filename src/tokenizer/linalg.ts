// Small dense linear algebra on row-major typed arrays, enough for the tokenizer's randomized SVD: orthonormalising
// a tall matrix's columns (modified Gram–Schmidt), symmetric eigendecomposition of a small matrix (cyclic Jacobi),
// and row normalisation. Everything is deterministic: same input, same output, no randomness here.

/** Orthonormalises the m columns of the row-major n×m matrix `a` in place (modified Gram–Schmidt, two passes for
 * stability). A column that is (numerically) in the span of the previous ones becomes all zeros. */
export function orthonormalizeColumns(a: Float64Array, n: number, m: number): void {
  const col = new Float64Array(n);
  for (let j = 0; j < m; j++) {
    for (let i = 0; i < n; i++) col[i] = a[i * m + j]!;
    const norm0 = Math.sqrt(dot(col, col));
    for (let pass = 0; pass < 2; pass++) {
      for (let k = 0; k < j; k++) {
        let p = 0;
        for (let i = 0; i < n; i++) p += a[i * m + k]! * col[i]!;
        if (p === 0) continue;
        for (let i = 0; i < n; i++) col[i] -= p * a[i * m + k]!;
      }
    }
    const norm = Math.sqrt(dot(col, col));
    const keep = norm > 1e-10 * Math.max(norm0, 1e-300);
    for (let i = 0; i < n; i++) a[i * m + j] = keep ? col[i]! / norm : 0;
  }
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Eigendecomposition of a symmetric m×m matrix (row-major, not modified). Returns eigenvalues and the eigenvectors
 * as the columns of a row-major m×m matrix, ordered by decreasing |eigenvalue|. Each vector's sign is fixed so its
 * largest-magnitude entry is positive (a deterministic convention). */
export function symmetricEigen(s: Float64Array, m: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(s);
  const v = new Float64Array(m * m);
  for (let i = 0; i < m; i++) v[i * m + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < m; p++) for (let q = p + 1; q < m; q++) off += a[p * m + q]! ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < m; p++) {
      for (let q = p + 1; q < m; q++) {
        const apq = a[p * m + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const app = a[p * m + p]!;
        const aqq = a[q * m + q]!;
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const sn = t * c;
        for (let k = 0; k < m; k++) {
          const akp = a[k * m + p]!;
          const akq = a[k * m + q]!;
          a[k * m + p] = c * akp - sn * akq;
          a[k * m + q] = sn * akp + c * akq;
        }
        for (let k = 0; k < m; k++) {
          const apk = a[p * m + k]!;
          const aqk = a[q * m + k]!;
          a[p * m + k] = c * apk - sn * aqk;
          a[q * m + k] = sn * apk + c * aqk;
        }
        for (let k = 0; k < m; k++) {
          const vkp = v[k * m + p]!;
          const vkq = v[k * m + q]!;
          v[k * m + p] = c * vkp - sn * vkq;
          v[k * m + q] = sn * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: m }, (_, i) => i).sort((x, y) => Math.abs(a[y * m + y]!) - Math.abs(a[x * m + x]!) || x - y);
  const values = new Float64Array(m);
  const vectors = new Float64Array(m * m);
  order.forEach((src, dst) => {
    values[dst] = a[src * m + src]!;
    let big = 0;
    for (let k = 0; k < m; k++) if (Math.abs(v[k * m + src]!) > Math.abs(big)) big = v[k * m + src]!;
    const sign = big < 0 ? -1 : 1;
    for (let k = 0; k < m; k++) vectors[k * m + dst] = sign * v[k * m + src]!;
  });
  return { values, vectors };
}

/** L2-normalises each row of an n×d matrix in place; rows of norm 0 stay 0. Returns the original norms. */
export function normalizeRows(x: Float32Array | Float64Array, n: number, d: number): Float64Array {
  const norms = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[i * d + j]! ** 2;
    const norm = Math.sqrt(s);
    norms[i] = norm;
    if (norm > 0) for (let j = 0; j < d; j++) x[i * d + j] = x[i * d + j]! / norm;
  }
  return norms;
}
