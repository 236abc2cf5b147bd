// An inclusive range of ids (user ids): the users a generator run writes, a training or evaluation split.
export interface IdRange {
  from: number;
  to: number;
}

/** True when `id` lies in `r` (no range = every id). */
export const inIdRange = (id: number, r: IdRange | undefined): boolean => r === undefined || (id >= r.from && id <= r.to);
