import {
  array,
  boolean,
  number,
  object,
  optional,
  pattern,
  safeInt,
  string,
  type Guard,
  type Infer,
} from "./guard.js";

/**
 * Shapes of the QMP replies bitferry reads. Validated at the boundary so that a QEMU whose replies changed fails
 * with a clear message here, not with `undefined` three layers later. Unknown keys are ignored: newer QEMUs add them.
 */

export const BlockDirtyInfo = object({
  name: optional(string),
  count: safeInt,
  granularity: safeInt,
  recording: boolean,
  busy: boolean,
  persistent: boolean,
  inconsistent: optional(boolean),
});
export type BlockDirtyInfo = Infer<typeof BlockDirtyInfo>;

export const Qcow2StoredBitmap = object({
  name: string,
  granularity: safeInt,
  flags: array(string),
});
export type Qcow2StoredBitmap = Infer<typeof Qcow2StoredBitmap>;

const ImageInfo = object({
  "virtual-size": safeInt,
  filename: optional(string),
  format: optional(string),
  "format-specific": optional(
    object({
      type: string,
      data: optional(
        object({
          compat: optional(string),
          bitmaps: optional(array(Qcow2StoredBitmap)),
        }),
      ),
    }),
  ),
});

export const BlockDeviceInfo = object({
  "node-name": string,
  drv: string,
  ro: boolean,
  file: optional(string),
  image: ImageInfo,
  "dirty-bitmaps": optional(array(BlockDirtyInfo)),
});
export type BlockDeviceInfo = Infer<typeof BlockDeviceInfo>;

export const NamedBlockNodes = array(BlockDeviceInfo);

export const BlockInfo = object({
  device: string,
  qdev: optional(string),
  inserted: optional(object({ "node-name": string })),
});
export type BlockInfo = Infer<typeof BlockInfo>;
export const BlockInfoList = array(BlockInfo);

export const BlockGraph = object({
  nodes: array(object({ id: safeInt, type: string, name: string })),
  edges: array(object({ parent: safeInt, child: safeInt, name: string })),
});
export type BlockGraph = Infer<typeof BlockGraph>;

export const StatusInfo = object({ status: string, running: boolean });
export type StatusInfo = Infer<typeof StatusInfo>;

export const MigrationCapabilityList = array(object({ capability: string, state: boolean }));

export const BitmapAliasMapping = array(
  object({
    "node-name": string,
    alias: string,
    bitmaps: array(
      object({
        name: string,
        alias: string,
        transform: optional(object({ persistent: optional(boolean) })),
      }),
    ),
  }),
);
export type BitmapAliasMapping = Infer<typeof BitmapAliasMapping>;

export const MigrationParameters = object({
  "downtime-limit": optional(safeInt),
  "max-bandwidth": optional(safeInt),
  "block-bitmap-mapping": optional(BitmapAliasMapping),
});
export type MigrationParameters = Infer<typeof MigrationParameters>;

const RamStats = object({
  transferred: safeInt,
  remaining: safeInt,
  total: safeInt,
  mbps: optional(number),
  "dirty-sync-count": optional(safeInt),
});

export const MigrationInfo = object({
  status: optional(string),
  "error-desc": optional(string),
  "total-time": optional(safeInt),
  downtime: optional(safeInt),
  "expected-downtime": optional(safeInt),
  "setup-time": optional(safeInt),
  ram: optional(RamStats),
});
export type MigrationInfo = Infer<typeof MigrationInfo>;

export const Sha256Reply = object({ sha256: pattern(/^[0-9a-f]{64}$/) });

export const VersionInfo = object({
  qemu: object({ major: safeInt, minor: safeInt, micro: safeInt }),
  package: string,
});
export type VersionInfo = Infer<typeof VersionInfo>;

export const MemorySizeSummary = object({ "base-memory": safeInt, "plugged-memory": optional(safeInt) });

export const BlockJobInfo = object({
  device: string,
  type: string,
  len: safeInt,
  offset: safeInt,
  ready: boolean,
  status: optional(string),
});
export const BlockJobInfoList = array(BlockJobInfo);
export type BlockJobInfo = Infer<typeof BlockJobInfo>;

export type { Guard };
