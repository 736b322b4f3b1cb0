import { Qcow2CorruptError } from "./errors.js";
import type { BitmapDirEntry } from "./directory.js";
import type { Qcow2Header } from "./header.js";

/** A byte range of the file owned by one structure. */
export interface Region {
  start: number;
  end: number;
  what: string;
}

/**
 * The metadata regions bitferry follows: the header cluster, the directory, and the tables of the bitmaps whose
 * data it reads (an in-use bitmap's table is never read, as in QEMU).
 */
export function metadataRegions(
  header: Qcow2Header,
  directory: { offset: number; size: number },
  entries: readonly BitmapDirEntry[],
): Region[] {
  const regions: Region[] = [
    { start: 0, end: header.clusterSize, what: "the header cluster" },
    { start: directory.offset, end: directory.offset + directory.size, what: "the bitmap directory" },
  ];
  for (const e of entries) {
    if (e.inUse) continue;
    regions.push({
      start: e.tableOffset,
      end: e.tableOffset + e.tableSize * 8,
      what: `the bitmap table of ${JSON.stringify(e.name)}`,
    });
  }
  return regions;
}

/**
 * Sorted, non-overlapping regions. Construction fails when two overlap: no writer puts two structures in the same
 * bytes, and following such pointers would read one structure as another.
 */
export class RegionIndex {
  private readonly sorted: Region[];

  constructor(regions: readonly Region[]) {
    this.sorted = [...regions].sort((a, b) => a.start - b.start || a.end - b.end);
    for (let i = 1; i < this.sorted.length; i++) {
      const prev = this.sorted[i - 1];
      const cur = this.sorted[i];
      if (prev !== undefined && cur !== undefined && cur.start < prev.end) {
        throw new Qcow2CorruptError(
          `${cur.what} (bytes ${cur.start} to ${cur.end}) overlaps ${prev.what} (bytes ${prev.start} to ${prev.end})`,
          { offset: cur.start },
        );
      }
    }
  }

  /** The region [start, end) overlaps, if any. */
  find(start: number, end: number): Region | undefined {
    let lo = 0;
    let hi = this.sorted.length;
    // Regions do not overlap, so the last one starting before `end` is the only candidate.
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.sorted[mid];
      if (r !== undefined && r.start < end) lo = mid + 1;
      else hi = mid;
    }
    const r = this.sorted[lo - 1];
    return r !== undefined && r.end > start ? r : undefined;
  }
}

/**
 * Remembers every data cluster handed out, across all bitmaps of one image. A data cluster that two table entries
 * share, or that lies inside metadata, is corruption; refusing it also bounds the work a hostile image can cause to
 * the size of the file (each distinct cluster is read once).
 */
export class DataClusterTracker {
  private readonly seen = new Map<number, string>();

  constructor(private readonly metadata: RegionIndex) {}

  claim(offset: number, length: number, owner: string, entryOffset: number): void {
    const meta = this.metadata.find(offset, offset + length);
    if (meta !== undefined) {
      throw new Qcow2CorruptError(`${owner} points at a data cluster at ${offset} inside ${meta.what}`, {
        offset: entryOffset,
        field: "bitmap table entry",
      });
    }
    const other = this.seen.get(offset);
    if (other !== undefined) {
      throw new Qcow2CorruptError(
        `${owner} points at the data cluster at ${offset}, which ${other} uses too`,
        {
          offset: entryOffset,
          field: "bitmap table entry",
        },
      );
    }
    this.seen.set(offset, owner);
  }
}
