/**
 * Synthetic source/destination snapshots of any size, shaped like QEMU 7.2's own replies (the key sets of
 * test/fixtures/qmp, which were captured from real QEMU), so that validation, graph building and planning see
 * what they see in production. Deterministic: the same size always gives the same graphs.
 *
 * One "disk" is one node carrying BITMAPS_PER_DISK named bitmaps, plus the nodes around it (protocol nodes,
 * filters). The mix, by disk index modulo 20:
 *
 *   0-6    -drive id=driveN, generated node-names on both sides (found by drive name)
 *   7-12   -blockdev node-name=diskN with an explicit file node, under an anonymous BlockBackend (by node-name)
 *   13     -drive under a throttle filter on the source only (drive root below the filter)
 *   14     -drive under a running drive-mirror's mirror_top filter (the 2019 case)
 *   15     -blockdev oldN on the source, newN on the destination: a per-node and a per-bitmap `map` entry
 *   16     -blockdev dataN on the source, -drive id=dataN on the destination (node address found as a drive)
 *   17     -drive id=sysN,node-name=sysfmtN on the source, -blockdev sysfmtN on the destination
 *   18     bitmaps on a drive's protocol node (generated name, not a drive root): denied by pattern
 *   19     a drive whose bitmaps a `map` entry drops on purpose (target: null)
 *
 * Bitmap names per disk: backup-0..5 and inc-0..1 (allowed), tmp-0 (denied), scratch (not allowed), so every
 * rule of the decision procedure runs at every size.
 */
import type { RawSnapshot } from "../../src/qemu/snapshot.js";

export const BITMAPS_PER_DISK = 10;
const GiB = 1024 ** 3;
const DISK_SIZE = 64 * GiB;
const GRANULARITY = 65536;

const BITMAP_NAMES = [
  "backup-0",
  "backup-1",
  "backup-2",
  "backup-3",
  "backup-4",
  "backup-5",
  "inc-0",
  "inc-1",
  "tmp-0",
  "scratch",
];

export const POLICY = {
  allow: ["backup-*", "inc-*", "onfile-*"],
  deny: ["tmp-*", "onfile-*", "drive1?/inc-1"],
};

type Json = Record<string, unknown>;

/** The keys QEMU 7.2 sends for every node, beyond the ones bitferry reads: validation has to walk past them. */
function nodeInfo(o: {
  name: string;
  drv: string;
  size: number;
  file: string;
  qcow2?: boolean;
  bitmaps?: Json[];
  stored?: { name: string; granularity: number; flags: string[] }[];
}): Json {
  const image: Json = {
    "virtual-size": o.size,
    filename: o.file,
    format: o.drv,
    "actual-size": 2428928,
    "dirty-flag": false,
  };
  if (o.qcow2) {
    image["cluster-size"] = 65536;
    image["format-specific"] = {
      type: "qcow2",
      data: {
        compat: "1.1",
        "compression-type": "zlib",
        "lazy-refcounts": false,
        "refcount-bits": 16,
        corrupt: false,
        "extended-l2": false,
        ...(o.stored && o.stored.length > 0 ? { bitmaps: o.stored } : {}),
      },
    };
  }
  return {
    iops_rd: 0,
    detect_zeroes: "off",
    image,
    iops_wr: 0,
    ro: false,
    "node-name": o.name,
    backing_file_depth: 0,
    drv: o.drv,
    iops: 0,
    bps_wr: 0,
    write_threshold: 0,
    ...(o.bitmaps ? { "dirty-bitmaps": o.bitmaps } : {}),
    encrypted: false,
    bps: 0,
    bps_rd: 0,
    cache: { "no-flush": false, direct: false, writeback: true },
    file: o.file,
  };
}

function bitmapsFor(disk: number, prefix?: string): Json[] {
  return BITMAP_NAMES.map((name, j) => ({
    name: prefix ? `${prefix}-${j}` : name,
    recording: j !== 5,
    persistent: name.startsWith("backup-"),
    busy: false,
    granularity: GRANULARITY,
    count: ((disk * 7 + j * 13) % 50) * GRANULARITY,
  }));
}

/** What an incoming QEMU shows for a shared qcow2 image whose persistent bitmaps the source holds open. */
function storedInUse(): { name: string; granularity: number; flags: string[] }[] {
  return BITMAP_NAMES.filter((n) => n.startsWith("backup-")).map((name) => ({
    name,
    granularity: GRANULARITY,
    flags: ["in-use", "auto"],
  }));
}

class Builder {
  readonly nodes: Json[] = [];
  readonly backends: Json[] = [];
  readonly graphNodes: { id: number; type: string; name: string }[] = [];
  readonly edges: { parent: number; child: number; name: string; perm: string[]; "shared-perm": string[] }[] =
    [];
  private nextId = 1;
  private generated: number;

  constructor(
    readonly side: "source" | "destination",
    generatedBase: number,
  ) {
    this.generated = generatedBase;
  }

  gen(): string {
    return `#block${String(this.generated++).padStart(3, "0")}`;
  }

  /** A block-driver node; returns its graph id. */
  node(info: Json): number {
    this.nodes.push(info);
    const id = this.nextId++;
    this.graphNodes.push({ id, type: "block-driver", name: info["node-name"] as string });
    return id;
  }

  edge(parent: number, child: number, name: string): void {
    this.edges.push({
      parent,
      child,
      name,
      perm: ["write", "consistent-read"],
      "shared-perm": ["write-unchanged", "consistent-read"],
    });
  }

  backend(device: string, root: number, rootInfo: Json, qdev?: string): void {
    const id = this.nextId++;
    this.graphNodes.push({ id, type: "block-backend", name: device });
    this.edge(id, root, "root");
    this.backends.push({
      device,
      ...(qdev ? { qdev } : {}),
      locked: false,
      removable: device !== "",
      inserted: rootInfo,
      type: "unknown",
    });
  }

  /** qcow2 over file; returns the format node's graph id and info. */
  qcow2(
    fmtName: string,
    fileName: string,
    path: string,
    bitmaps?: Json[],
    fileBitmaps?: Json[],
  ): [number, Json] {
    const dst = this.side === "destination";
    const fmt = nodeInfo({
      name: fmtName,
      drv: "qcow2",
      size: DISK_SIZE,
      file: path,
      qcow2: true,
      ...(bitmaps && !dst ? { bitmaps } : {}),
      ...(dst ? { stored: storedInUse() } : {}),
    });
    const fmtId = this.node(fmt);
    const fileId = this.node(
      nodeInfo({
        name: fileName,
        drv: "file",
        size: 2490368,
        file: path,
        ...(fileBitmaps && !dst ? { bitmaps: fileBitmaps } : {}),
      }),
    );
    this.edge(fmtId, fileId, "file");
    return [fmtId, fmt];
  }

  filter(drv: "throttle" | "mirror_top", child: number, path: string): [number, Json] {
    const info = nodeInfo({ name: this.gen(), drv, size: DISK_SIZE, file: path });
    const id = this.node(info);
    this.edge(id, child, drv === "throttle" ? "file" : "backing");
    return [id, info];
  }
}

function disk(b: Builder, i: number): void {
  const src = b.side === "source";
  const path = `/var/lib/vms/vm/disk${i}.qcow2`;
  const bm = bitmapsFor(i);
  const qdev = `/machine/peripheral/virtio-disk${i}/virtio-backend`;
  switch (i % 20) {
    case 13: {
      const [fmtId, fmt] = b.qcow2(b.gen(), b.gen(), path, bm);
      if (src) {
        const [id, info] = b.filter("throttle", fmtId, path);
        b.backend(`drive${i}`, id, info);
      } else b.backend(`drive${i}`, fmtId, fmt);
      return;
    }
    case 14: {
      const [fmtId, fmt] = b.qcow2(b.gen(), b.gen(), path, bm);
      if (src) {
        const [id, info] = b.filter("mirror_top", fmtId, path);
        b.backend(`drive${i}`, id, info);
        // The mirror's target image: no bitmaps, no drive.
        b.qcow2(b.gen(), b.gen(), `/var/lib/vms/vm/mirror${i}.qcow2`);
      } else b.backend(`drive${i}`, fmtId, fmt);
      return;
    }
    case 15: {
      const [id, info] = b.qcow2(src ? `old${i}` : `new${i}`, src ? `oldf${i}` : `newf${i}`, path, bm);
      b.backend("", id, info, qdev);
      return;
    }
    case 16: {
      if (src) {
        const [id, info] = b.qcow2(`data${i}`, `dataf${i}`, path, bm);
        b.backend("", id, info, qdev);
      } else {
        const [id, info] = b.qcow2(b.gen(), b.gen(), path, bm);
        b.backend(`data${i}`, id, info);
      }
      return;
    }
    case 17: {
      const [id, info] = b.qcow2(`sysfmt${i}`, b.gen(), path, bm);
      if (src) b.backend(`sys${i}`, id, info);
      else b.backend("", id, info, qdev);
      return;
    }
    case 18: {
      const [id, info] = b.qcow2(b.gen(), b.gen(), path, undefined, bitmapsFor(i, "onfile"));
      b.backend(`drive${i}`, id, info);
      return;
    }
    default: {
      if (i % 20 <= 6 || i % 20 === 19) {
        const [id, info] = b.qcow2(b.gen(), b.gen(), path, bm);
        b.backend(`drive${i}`, id, info);
      } else {
        const [id, info] = b.qcow2(`disk${i}`, `file${i}`, path, bm);
        b.backend("", id, info, qdev);
      }
    }
  }
}

export interface SyntheticCase {
  disks: number;
  source: RawSnapshot;
  destination: RawSnapshot;
  /** The policy file's text (JSON), parsed by the benchmark like the CLI parses --policy. */
  policyJson: string;
  /** Block-driver nodes on the source, all included. */
  sourceNodes: number;
  bitmaps: number;
}

/** Static parts of a snapshot, as QEMU 7.2 reports them (copied from a captured fixture). */
function common(status: Json): Omit<RawSnapshot, "namedNodes" | "blockBackends" | "blockGraph"> {
  const caps = [
    "xbzrle",
    "rdma-pin-all",
    "auto-converge",
    "zero-blocks",
    "compress",
    "events",
    "postcopy-ram",
    "x-colo",
    "release-ram",
    "block",
    "return-path",
    "pause-before-switchover",
    "multifd",
    "dirty-bitmaps",
    "postcopy-blocktime",
    "late-block-activate",
    "x-ignore-shared",
    "validate-uuid",
    "background-snapshot",
    "zero-copy-send",
    "postcopy-preempt",
  ].map((capability) => ({ capability, state: false }));
  return {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u18+b3" },
    status,
    migrationParameters: {
      "cpu-throttle-tailslow": false,
      "xbzrle-cache-size": 67108864,
      "cpu-throttle-initial": 20,
      "announce-max": 550,
      "decompress-threads": 2,
      "compress-threads": 8,
      "compress-level": 1,
      "multifd-channels": 2,
      "multifd-zstd-level": 1,
      "announce-initial": 50,
      "block-incremental": false,
      "compress-wait-thread": true,
      "downtime-limit": 300,
      "tls-authz": "",
      "multifd-compression": "none",
      "announce-rounds": 5,
      "announce-step": 100,
      "tls-creds": "",
      "multifd-zlib-level": 1,
      "max-cpu-throttle": 99,
      "max-postcopy-bandwidth": 0,
      "tls-hostname": "",
      "throttle-trigger-threshold": 50,
      "max-bandwidth": 134217728,
      "x-checkpoint-delay": 20000,
      "cpu-throttle-increment": 10,
    },
    migrationCapabilities: caps,
    memory: { "base-memory": 4 * GiB, "plugged-memory": 0 },
    features: {
      bitmapMapping: true,
      mappingTransform: true,
      bitmapSha256: true,
      blockGraph: true,
      incomingExitOnError: false,
    },
  };
}

function snapshot(b: Builder, status: Json): RawSnapshot {
  return {
    ...common(status),
    namedNodes: b.nodes,
    blockBackends: b.backends,
    blockGraph: { nodes: b.graphNodes, edges: b.edges },
  };
}

export function syntheticCase(disks: number): SyntheticCase {
  const src = new Builder("source", 100);
  // The destination's generated names differ, as they do between two QEMU processes.
  const dst = new Builder("destination", 100 + 7 * disks);
  for (let i = 0; i < disks; i++) {
    disk(src, i);
    disk(dst, i);
  }
  const map: unknown[] = [];
  for (let i = 0; i < disks; i++) {
    if (i % 20 === 15) {
      map.push({
        source: { node: `old${i}`, bitmap: "backup-5" },
        target: { node: `new${i}`, bitmap: "archive-5" },
      });
      map.push({ source: `old${i}`, target: `new${i}` });
    } else if (i % 20 === 19) {
      map.push({ source: `drive${i}`, target: null });
    }
  }
  // Indented as a person (or yaml.dump) would write it; the map grows with the graph.
  const policyJson = JSON.stringify({ ...POLICY, map }, null, 2);
  return {
    disks,
    source: snapshot(src, { status: "running", singlestep: false, running: true }),
    destination: snapshot(dst, { status: "inmigrate", singlestep: false, running: false }),
    policyJson,
    sourceNodes: src.nodes.length,
    bitmaps: disks * BITMAPS_PER_DISK,
  };
}
