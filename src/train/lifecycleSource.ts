// Which lifecycle summary a GEMs model trains and serves on:
//   'memory'     the QLA compressor's M × d memory as of each sample (src/lifecycle/memorySummarizer.ts) — what the
//                nightly job stores, so serving reads the stored memories; the default once a compressor exists;
//   'chunk-mean' the parameter-free stop-gap (src/model/features.ts ChunkMeanSummarizer);
//   'interests'  parameter-free, one slot per coarse interest (first Semantic-ID code) of the lifecycle events
//                (src/model/features.ts InterestSummarizer).
// The choice and the compressor version are recorded in checkpoint meta.train; the compressor's weights ride along
// in the checkpoint so serving and evaluation compute missing memories with the same compressor.
import { UsageError } from '../cli/args.js';
import type { GemsConfig } from '../config/config.js';
import { latestCompressorVersion, loadCompressor } from '../lifecycle/compressor.js';
import { compressorCheckpointParts, compressorFromCheckpoint, LIFECYCLE_SOURCES, lifecycleSourceOf, MemorySummarizer, type LifecycleSourceKind } from '../lifecycle/memorySummarizer.js';
import { parameterFreeSummarizer, type LifecycleSummarizer } from '../model/features.js';
import type { SemanticIds } from '../model/sid.js';
import { readCheckpoint } from './checkpoint.js';

export interface TrainingLifecycle {
  source: LifecycleSourceKind;
  summarizer: LifecycleSummarizer;
  /** Goes into meta.train. */
  trainMeta: Record<string, unknown>;
  /** Goes into the checkpoint's arrays (the compressor, for the memory source). */
  arrays: Record<string, Int32Array | Float32Array>;
  dispose(): void;
}

/** Parses --lifecycle-source; undefined = default ('memory' when a compressor was trained, else 'chunk-mean'). */
export function parseLifecycleSource(value: string | undefined, config: GemsConfig): LifecycleSourceKind {
  if (value === undefined || value === '') return latestCompressorVersion(config) ? 'memory' : 'chunk-mean';
  if (!(LIFECYCLE_SOURCES as string[]).includes(value)) throw new UsageError(`--lifecycle-source must be ${LIFECYCLE_SOURCES.join('|')}, got '${value}'`);
  return value as LifecycleSourceKind;
}

/**
 * The summarizer for training. Memory source: the latest compressor (or `compressorVersion`); its memories are
 * M × d = lifecycle.slots × lifecycle.dim of the compressor. Call `await initBackend()` first.
 */
export function trainingLifecycle(config: GemsConfig, sid: SemanticIds, source: LifecycleSourceKind, chunkMeanSlots: number, compressorVersion?: string): TrainingLifecycle {
  if (source !== 'memory') {
    return { source, summarizer: parameterFreeSummarizer(source, sid, chunkMeanSlots), trainMeta: { lifecycleSource: source }, arrays: {}, dispose() {} };
  }
  const version = compressorVersion ?? latestCompressorVersion(config);
  if (!version) throw new UsageError(`--lifecycle-source memory needs a trained compressor: run 'gems train-compressor' first (or use --lifecycle-source chunk-mean)`);
  const compressor = loadCompressor(config, version);
  const parts = compressorCheckpointParts(compressor);
  const summarizer = new MemorySummarizer(compressor);
  return { source, summarizer, trainMeta: { ...parts.meta, lifecycleTMid: config.streams.tMid }, arrays: parts.arrays, dispose: () => summarizer.dispose() };
}

/**
 * The lifecycle summarizer a checkpoint was trained with, for loadGems(dir, summarizer): the compressor it carries
 * for memory-trained checkpoints, undefined (loadGems' chunk-mean default) otherwise. Call `await initBackend()` first.
 */
export function checkpointLifecycleSummarizer(dir: string): MemorySummarizer | undefined {
  const ck = readCheckpoint(dir);
  if (lifecycleSourceOf(ck.meta.train) !== 'memory') return undefined;
  return new MemorySummarizer(compressorFromCheckpoint(ck.meta.train, ck.arrays, dir));
}
