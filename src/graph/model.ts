/** The block graph of one QEMU, as plain data: JSON-serialisable, so it is captured, diffed and drawn as is. */

export interface Bitmap {
  name: string;
  granularity: number;
  /** Dirty bytes as QEMU counts them: dirty granules times granularity. */
  count: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
  inconsistent: boolean;
  /** Persistent bitmaps of a read-only node are read-only: QEMU refuses to migrate them. */
  readOnly: boolean;
}

/** A bitmap stored in a qcow2 image (what an inactive, incoming QEMU shows instead of in-memory bitmaps). */
export interface StoredBitmap {
  name: string;
  granularity: number;
  inUse: boolean;
  auto: boolean;
}

export interface Child {
  /** The edge's role: "file", "backing", "root", ... */
  role: string;
  node: string;
}

export interface BlockNode {
  name: string;
  /** QEMU made this name up (`#block123`); it changes every time QEMU starts. */
  generated: boolean;
  driver: string;
  readOnly: boolean;
  size: number;
  filename: string | undefined;
  /** The driver is a filter (mirror_top, throttle, ...), and `filtered` is the child it passes I/O to. */
  filter: boolean;
  filtered: string | undefined;
  /** The format can store persistent bitmaps (qcow2 v3). */
  canStoreBitmaps: boolean;
  children: Child[];
  bitmaps: Bitmap[];
  anonymousBitmaps: number;
  storedBitmaps: StoredBitmap[];
}

export interface Drive {
  /** The BlockBackend's name (`-drive id=`). */
  name: string;
  /** The node directly under the BlockBackend (possibly a filter such as a running mirror's). */
  root: string;
  /** The first non-filter node below it, walking through filters without named bitmaps; none if a filter with bitmaps stops the walk. */
  driveRoot: string | undefined;
}

export interface BlockGraph {
  nodes: BlockNode[];
  drives: Drive[];
  /** `query-status`: "inmigrate" for a destination waiting for a migration. */
  runState: string;
}
