import { z } from "zod";

/**
 * Schemas of the QMP replies bitferry reads. Validated at the boundary so that a QEMU whose replies changed fails
 * with a clear message here, not with `undefined` three layers later. Unknown keys are ignored: newer QEMUs add them.
 */

const safeInt = z.number().int().refine(Number.isSafeInteger, "integer beyond 2^53");

export const BlockDirtyInfo = z.object({
  name: z.string().optional(),
  count: safeInt,
  granularity: safeInt,
  recording: z.boolean(),
  busy: z.boolean(),
  persistent: z.boolean(),
  inconsistent: z.boolean().optional(),
});
export type BlockDirtyInfo = z.infer<typeof BlockDirtyInfo>;

export const Qcow2StoredBitmap = z.object({
  name: z.string(),
  granularity: safeInt,
  flags: z.array(z.string()),
});
export type Qcow2StoredBitmap = z.infer<typeof Qcow2StoredBitmap>;

const ImageInfo = z.object({
  "virtual-size": safeInt,
  filename: z.string().optional(),
  format: z.string().optional(),
  "format-specific": z
    .object({
      type: z.string(),
      data: z
        .object({
          compat: z.string().optional(),
          bitmaps: z.array(Qcow2StoredBitmap).optional(),
        })
        .optional(),
    })
    .optional(),
});

export const BlockDeviceInfo = z.object({
  "node-name": z.string(),
  drv: z.string(),
  ro: z.boolean(),
  file: z.string().optional(),
  image: ImageInfo,
  "dirty-bitmaps": z.array(BlockDirtyInfo).optional(),
});
export type BlockDeviceInfo = z.infer<typeof BlockDeviceInfo>;

export const NamedBlockNodes = z.array(BlockDeviceInfo);

export const BlockInfo = z.object({
  device: z.string(),
  qdev: z.string().optional(),
  inserted: z.object({ "node-name": z.string() }).optional(),
});
export type BlockInfo = z.infer<typeof BlockInfo>;
export const BlockInfoList = z.array(BlockInfo);

export const BlockGraph = z.object({
  nodes: z.array(z.object({ id: safeInt, type: z.string(), name: z.string() })),
  edges: z.array(z.object({ parent: safeInt, child: safeInt, name: z.string() })),
});
export type BlockGraph = z.infer<typeof BlockGraph>;

export const StatusInfo = z.object({ status: z.string(), running: z.boolean() });
export type StatusInfo = z.infer<typeof StatusInfo>;

export const MigrationCapabilityList = z.array(z.object({ capability: z.string(), state: z.boolean() }));

export const BitmapAliasMapping = z.array(
  z.object({
    "node-name": z.string(),
    alias: z.string(),
    bitmaps: z.array(
      z.object({
        name: z.string(),
        alias: z.string(),
        transform: z.object({ persistent: z.boolean().optional() }).optional(),
      }),
    ),
  }),
);
export type BitmapAliasMapping = z.infer<typeof BitmapAliasMapping>;

export const MigrationParameters = z.object({
  "downtime-limit": safeInt.optional(),
  "max-bandwidth": safeInt.optional(),
  "block-bitmap-mapping": BitmapAliasMapping.optional(),
});
export type MigrationParameters = z.infer<typeof MigrationParameters>;

const RamStats = z.object({
  transferred: safeInt,
  remaining: safeInt,
  total: safeInt,
  mbps: z.number().optional(),
  "dirty-sync-count": safeInt.optional(),
});

export const MigrationInfo = z.object({
  status: z.string().optional(),
  "error-desc": z.string().optional(),
  "total-time": safeInt.optional(),
  downtime: safeInt.optional(),
  "expected-downtime": safeInt.optional(),
  "setup-time": safeInt.optional(),
  ram: RamStats.optional(),
});
export type MigrationInfo = z.infer<typeof MigrationInfo>;

export const Sha256Reply = z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/) });

export const VersionInfo = z.object({
  qemu: z.object({ major: safeInt, minor: safeInt, micro: safeInt }),
  package: z.string(),
});

export const MemorySizeSummary = z.object({ "base-memory": safeInt, "plugged-memory": safeInt.optional() });

export const BlockJobInfo = z.object({
  device: z.string(),
  type: z.string(),
  len: safeInt,
  offset: safeInt,
  ready: z.boolean(),
  status: z.string().optional(),
});
export const BlockJobInfoList = z.array(BlockJobInfo);
export type BlockJobInfo = z.infer<typeof BlockJobInfo>;
