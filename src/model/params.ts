// Named trainable parameters with deterministic initialisation: each parameter draws from its own Rng seeded by
// (model seed, parameter name), so a parameter's initial value does not depend on the order layers are built in.
// Serialised as one little-endian float32 blob plus a manifest (name, shape, offset) — see src/train/checkpoint.ts.
import { tf, variableFrom } from '../compute/backend.js';
import { Rng, hash32 } from '../util/random.js';

export type Init = 'normal' | 'zeros' | 'ones' | 'xavier';

export interface ParamManifestEntry {
  name: string;
  shape: number[];
  /** Offset in float32 elements into the blob. */
  offset: number;
}

function nameHash(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export class ParamStore {
  readonly vars = new Map<string, tf.Variable>();
  /** Parameters the optimizer must leave alone (e.g. frozen tables); still saved. */
  readonly frozen = new Set<string>();

  constructor(readonly seed: number) {}

  /** Returns the parameter `name`, creating it on first use with the given shape and initialiser. */
  get(name: string, shape: number[], init: Init = 'xavier', std = 0.02): tf.Variable {
    const existing = this.vars.get(name);
    if (existing) {
      if (existing.shape.join('x') !== shape.join('x')) throw new Error(`parameter ${name}: shape ${existing.shape} ≠ requested ${shape}`);
      return existing;
    }
    const size = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (init === 'ones') data.fill(1);
    else if (init !== 'zeros') {
      const rng = new Rng(hash32((this.seed ^ nameHash(name)) >>> 0));
      const fanIn = shape.length >= 2 ? shape[shape.length - 2]! : shape[0]!;
      const fanOut = shape[shape.length - 1]!;
      const s = init === 'xavier' ? Math.sqrt(2 / (fanIn + fanOut)) : std;
      for (let i = 0; i < size; i++) data[i] = rng.normal(0, s);
    }
    const v = variableFrom(data, shape, true, `${name}_${nameHash(name) ^ this.seed}_${Math.random().toString(36).slice(2, 8)}`);
    this.vars.set(name, v);
    return v;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  /** Trainable variables, sorted by name (stable order for the optimizer and checkpoints). */
  trainable(filter?: (name: string) => boolean): { name: string; v: tf.Variable }[] {
    return [...this.vars.entries()]
      .filter(([n]) => !this.frozen.has(n) && (!filter || filter(n)))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, v]) => ({ name, v }));
  }

  count(filter?: (name: string) => boolean): number {
    return this.trainable(filter).reduce((s, { v }) => s + v.size, 0);
  }

  /** All parameters as one float32 blob + manifest, sorted by name. */
  serialize(): { manifest: ParamManifestEntry[]; blob: Float32Array } {
    const names = [...this.vars.keys()].sort();
    const manifest: ParamManifestEntry[] = [];
    let offset = 0;
    for (const name of names) {
      const v = this.vars.get(name)!;
      manifest.push({ name, shape: v.shape, offset });
      offset += v.size;
    }
    const blob = new Float32Array(offset);
    for (const m of manifest) blob.set(this.vars.get(m.name)!.dataSync() as Float32Array, m.offset);
    return { manifest, blob };
  }

  /** Loads values saved by serialize(); every manifest entry must match an existing parameter's shape. */
  load(manifest: ParamManifestEntry[], blob: Float32Array, origin: string): void {
    for (const m of manifest) {
      const size = m.shape.reduce((a, b) => a * b, 1);
      if (m.offset + size > blob.length) throw new Error(`${origin}: parameter ${m.name} runs past the end of the weights blob`);
      const values = blob.subarray(m.offset, m.offset + size);
      const v = this.vars.get(m.name);
      if (!v) {
        // Created lazily by a layer not yet run: create it now with the stored value.
        this.vars.set(m.name, variableFrom(values.slice(), m.shape, true, `${m.name}_${Math.random().toString(36).slice(2, 10)}`));
        continue;
      }
      if (v.shape.join('x') !== m.shape.join('x')) throw new Error(`${origin}: parameter ${m.name} has shape ${m.shape}, model expects ${v.shape}`);
      // assign() takes its own reference to the data, as tf.variable does: dispose the source (see variableFrom).
      const source = tf.tensor(values.slice(), m.shape);
      v.assign(source);
      source.dispose();
    }
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}
