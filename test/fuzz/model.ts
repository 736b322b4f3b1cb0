/**
 * A generated setup as plain data: what each QEMU is started with, which bitmaps exist where (in memory or stored
 * in an image), what the guest wrote, and the policy. Plain data so that a failing case can be printed and
 * replayed; `realize` (setup.ts) turns it into two running QEMUs.
 */

export const KiB = 1024;
export const MiB = 1024 * 1024;

export interface BitmapSpec {
  name: string;
  granularity: number;
  /** Only on qcow2 format nodes (QEMU refuses persistence elsewhere). */
  persistent: boolean;
  enabled: boolean;
  /** Exported over NBD with the bitmap: QEMU marks it busy (requires it disabled). */
  busy: boolean;
}

/** A persistent bitmap written into an image with qemu-img before any QEMU opens it. */
export interface StoredSpec {
  name: string;
  granularity: number;
  enabled: boolean;
  /** Flagged in use (as after a crash): QEMU loads it inconsistent. */
  inUse: boolean;
}

export type DiskForm = "null" | "qcow2" | "drive";
export type DstForm = DiskForm | "raw";

export interface BackingSpec {
  /** The backing node's node-name; undefined: QEMU generates one. */
  node: string | undefined;
  stored: StoredSpec[];
}

export interface DstSpec {
  form: DstForm;
  /** Drive id (form "drive"). */
  drive: string | undefined;
  /** Node-name of the format node; undefined: generated (drives only). */
  node: string | undefined;
  throttle: string | undefined;
  size: number;
  readOnly: boolean;
  /** For a shared image: the destination's backing node-name (generated when undefined). */
  backingNode: string | undefined;
  /** Bitmaps stored in the destination's own image (not for shared images). */
  stored: StoredSpec[];
  /** Bitmaps added to the waiting destination over QMP. */
  ram: { name: string; granularity: number }[];
}

export interface DiskSpec {
  index: number;
  form: DiskForm;
  /** Drive id (form "drive"). */
  drive: string | undefined;
  /** Node-name of the format (or null-co) node; undefined: generated (drives only). */
  node: string | undefined;
  /** Node-name of the protocol node (qcow2, drive); undefined: generated. */
  fileNode: string | undefined;
  /** A throttle filter node on top (null, qcow2). */
  throttle: string | undefined;
  /** A drive-mirror runs on the drive (QEMU's mirror_top filter on top). */
  mirror: boolean;
  backing: BackingSpec | undefined;
  size: number;
  /** qcow2/drive: the destination opens the very same image files (shared storage). */
  shared: boolean;
  stored: StoredSpec[];
  bitmaps: BitmapSpec[];
  /** Bitmaps on the protocol node (transient). */
  fileBitmaps: BitmapSpec[];
  /** Guest writes [offset, length]: the first half before bitmaps are disabled, the second after. */
  writes: [number, number][];
  dst: DstSpec | undefined;
}

export interface PolicySpec {
  /** The policy file's content, as the user would write it. */
  doc: Record<string, unknown>;
  /** Written as YAML or JSON. */
  format: "yaml" | "json";
}

export interface SetupSpec {
  seed: number;
  index: number;
  /** Index into the build pairs the lab found (7.2→7.2, 10.0→10.0, cross pairs). */
  buildPair: number;
  disks: DiskSpec[];
  policy: PolicySpec;
  postcopy: boolean;
  copyStorage: boolean;
  /** `--resume`: bitferry starts the paused destination after verifying. */
  resume: boolean;
  maxDowntimeMs: number;
}

/** The address a user (and QMP) writes for a disk's format node on the source. */
export function sourceAddress(d: DiskSpec): string {
  return d.node ?? d.drive ?? "";
}

/** The name writes go through: the top of the disk (its drive, its throttle filter, or the node). */
export function writeTarget(d: DiskSpec): string {
  return d.drive ?? d.throttle ?? d.node ?? "";
}

export function canPersist(d: DiskSpec): boolean {
  return d.form !== "null";
}
