import type { BitmapAliasMapping } from "../qemu/replies.js";
import type { PlanTransport } from "./transport.js";

/** The policy file (DESIGN section 3), after validation. */
export interface Policy {
  /** false = strict: every named bitmap must be covered by `map`. */
  defaults: boolean;
  allow: string[] | undefined;
  deny: string[];
  map: MapEntry[];
}

export type MapSource = { kind: "node"; node: string } | { kind: "bitmap"; node: string; bitmap: string };

export interface MapTarget {
  node: string;
  bitmap?: string;
  persistent?: boolean;
  enabled?: boolean;
}

export interface MapEntry {
  /** Position in the file, for messages ("map[2]"). */
  index: number;
  source: MapSource;
  /** null: drop on purpose. */
  target: MapTarget | null;
}

/** Plan error codes (DESIGN section 5). Public: add, never rename. */
export type PlanErrorCode =
  | "UNADDRESSABLE"
  | "UNCOVERED"
  | "MAP_SOURCE_MISSING"
  | "TARGET_NODE_MISSING"
  | "TARGET_TOO_SMALL"
  | "TARGET_SIZE_MISMATCH"
  | "MAPPING_INEXPRESSIBLE"
  | "TARGET_READ_ONLY"
  | "TARGET_BITMAP_EXISTS"
  | "TARGET_CONFLICT"
  | "BITMAP_BUSY"
  | "BITMAP_INCONSISTENT"
  | "BITMAP_READ_ONLY"
  | "NAME_TOO_LONG"
  | "PERSISTENCE_UNSUPPORTED"
  | "QEMU_UNSUPPORTED"
  | "POSTCOPY_UNSAFE"
  | "DESTINATION_NOT_INCOMING"
  | "SOURCE_NODE_GROWS"
  | "INSECURE_NBD";

export type PlanWarningCode =
  | "GENERATED_NODE_NAME_IN_MAP"
  | "PRECOPY_MAY_NOT_CONVERGE"
  | "NO_CONTENT_HASH"
  | "SWITCHOVER_START_MISMATCH"
  | "CHAIN_BITMAP_DROPPED"
  | "INSECURE_TRANSPORT";

export type Rule =
  | "drive-name"
  | "node-name"
  | "map"
  | "map-drop"
  | "deny"
  | "not-allowed"
  | "read-only-node"
  | "chain-merge"
  | PlanErrorCode;

export interface PlanError {
  code: PlanErrorCode;
  message: string;
  /** The source bitmap's node (null for an error about the plan as a whole). */
  node: string | null;
  bitmap: string | null;
  target?: { node: string; bitmap: string };
}

export interface PlanWarning {
  code: PlanWarningCode;
  message: string;
  node?: string;
  bitmap?: string;
}

export interface PlanBitmapSource {
  node: string;
  drive: string | null;
  bitmap: string;
  granularity: number;
  persistent: boolean;
  recording: boolean;
  dirtyBytes: number;
}

export interface PlanBitmapTarget {
  node: string;
  drive: string | null;
  bitmap: string;
  persistent: boolean;
  enabled: boolean;
}

export type PlanAction = "migrate" | "skip" | "error";

export interface PlanBitmap {
  source: PlanBitmapSource;
  action: PlanAction;
  rule: Rule;
  target: PlanBitmapTarget | null;
  errors: PlanError[];
  warnings: PlanWarning[];
}

/** The `plan --json` document. */
export interface Plan {
  version: 1;
  ok: boolean;
  bitmaps: PlanBitmap[];
  errors: PlanError[];
  warnings: PlanWarning[];
  mapping: { source: BitmapAliasMapping; destination: BitmapAliasMapping };
  payloadBytes: number;
  /** `--copy-storage`: each disk copied and the destination node it is copied to. */
  disks?: PlanDisk[];
  /** `--copy-storage`: bitmaps of a backing chain that travel merged, as a temporary bitmap on the disk's top node. */
  merges?: PlanMerge[];
  /** How each monitor is reached and how the stream and the disk copy travel (when the request said). */
  transport?: PlanTransport;
}

export interface PlanDisk {
  source: { node: string; drive: string | null; mirrorFrom: string; size: number };
  target: { node: string; drive: string | null; size: number };
}

export interface PlanMerge {
  node: string;
  temporary: string;
  bitmaps: { node: string; bitmap: string }[];
  target: { node: string; bitmap: string } | null;
}
