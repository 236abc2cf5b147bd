// Adam with linear warm-up, optional weight decay (AdamW style) and global-norm gradient clipping. Written out
// (rather than tf.train.adam) so the learning rate can change per step and the moments can be checkpointed.
import { tf, variableFrom } from '../compute/backend.js';
import { adamUpdate } from '../compute/ops.js';
import type { ParamStore } from '../model/params.js';

export interface AdamConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Steps of linear warm-up from 0 to lr. */
  warmupSteps: number;
  /**
   * Cosine decay after warm-up: from lr down to lr·decayTo at step decaySteps, constant after (0 or absent = no
   * decay). Step-based, so a resumed run (the step is in the checkpoint) continues the same schedule.
   */
  decaySteps?: number;
  decayTo?: number;
  /** Clip the global gradient norm to this (0 = off). */
  clipNorm: number;
  weightDecay: number;
}

export const DEFAULT_ADAM: AdamConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, warmupSteps: 100, clipNorm: 1, weightDecay: 0 };

export interface StepStats {
  loss: number;
  gradNorm: number;
  lr: number;
}

export class Adam {
  step = 0;
  private m = new Map<string, tf.Variable>();
  private v = new Map<string, tf.Variable>();

  constructor(
    readonly params: ParamStore,
    readonly cfg: AdamConfig,
  ) {}

  lrAt(step: number): number {
    const { lr, warmupSteps, decaySteps = 0, decayTo = 1 } = this.cfg;
    if (warmupSteps > 0 && step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
    if (decaySteps <= warmupSteps || decayTo >= 1) return lr;
    const t = Math.min(1, (step - warmupSteps) / (decaySteps - warmupSteps));
    return lr * (decayTo + ((1 - decayTo) * (1 + Math.cos(Math.PI * t))) / 2);
  }

  /**
   * One optimisation step on `lossFn` over the trainable parameters selected by `filter`. `extra` may return
   * auxiliary scalars (computed in the same forward pass) for logging.
   */
  minimize(lossFn: () => tf.Scalar, filter?: (name: string) => boolean): StepStats {
    const vars = this.params.trainable(filter);
    const lr = this.lrAt(this.step);
    const { value, grads } = tf.variableGrads(lossFn, vars.map((x) => x.v));
    const loss = value.dataSync()[0]!;
    value.dispose();
    let gradNorm = 0;
    tf.tidy(() => {
      const sq = vars.map(({ v }) => (grads[v.name] ? grads[v.name]!.square().sum() : tf.scalar(0)));
      gradNorm = Math.sqrt(tf.addN(sq).dataSync()[0]!);
    });
    const scale = this.cfg.clipNorm > 0 && gradNorm > this.cfg.clipNorm ? this.cfg.clipNorm / gradNorm : 1;
    this.step++;
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - beta1 ** this.step;
    const bc2 = 1 - beta2 ** this.step;
    tf.tidy(() => {
      for (const { name, v } of vars) {
        const g0 = grads[v.name];
        if (!g0 || !Number.isFinite(gradNorm)) continue;
        const m = this.slot(this.m, name, v);
        const s = this.slot(this.v, name, v);
        const decay = weightDecay > 0 && !name.includes('norm') && !name.endsWith('.b') ? weightDecay : 0;
        const [p1, m1, s1] = adamUpdate(v, g0, m, s, { lr, beta1, beta2, eps, bc1, bc2, scale, weightDecay: decay });
        m.assign(m1);
        s.assign(s1);
        v.assign(p1);
      }
    });
    for (const g of Object.values(grads)) g.dispose();
    if (!Number.isFinite(gradNorm) || !Number.isFinite(loss)) throw new Error(`non-finite loss/gradient at step ${this.step} (loss ${loss}, grad norm ${gradNorm})`);
    return { loss, gradNorm, lr };
  }

  private slot(map: Map<string, tf.Variable>, name: string, like: tf.Variable): tf.Variable {
    let s = map.get(name);
    if (!s) {
      s = tf.variable(tf.zerosLike(like), false);
      map.set(name, s);
    }
    return s;
  }

  /** Moments as one blob (m then v per parameter, names sorted) for checkpoints. */
  serialize(): { step: number; names: string[]; sizes: number[]; blob: Float32Array } {
    const names = [...this.m.keys()].sort();
    const sizes = names.map((n) => this.m.get(n)!.size);
    const total = sizes.reduce((a, b) => a + b, 0);
    const blob = new Float32Array(total * 2);
    let off = 0;
    for (const n of names) {
      blob.set(this.m.get(n)!.dataSync() as Float32Array, off);
      off += this.m.get(n)!.size;
    }
    for (const n of names) {
      blob.set(this.v.get(n)!.dataSync() as Float32Array, off);
      off += this.v.get(n)!.size;
    }
    return { step: this.step, names, sizes, blob };
  }

  load(state: { step: number; names: string[]; sizes: number[] }, blob: Float32Array): void {
    this.step = state.step;
    const total = state.sizes.reduce((a, b) => a + b, 0);
    if (blob.length !== total * 2) throw new Error(`optimizer state: blob has ${blob.length} floats, expected ${total * 2}`);
    let off = 0;
    const read = (map: Map<string, tf.Variable>) => {
      state.names.forEach((n, i) => {
        const p = this.params.vars.get(n);
        if (!p) throw new Error(`optimizer state: unknown parameter ${n}`);
        map.get(n)?.dispose();
        map.set(n, variableFrom(blob.slice(off, off + state.sizes[i]!), p.shape, false));
        off += state.sizes[i]!;
      });
    };
    read(this.m);
    read(this.v);
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
    this.m.clear();
    this.v.clear();
  }
}
