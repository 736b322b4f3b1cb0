import type { Bitmap, BlockGraph, BlockNode, Drive } from "../../src/graph/model.js";
import { planFromGraphs, type PlanResult } from "../../src/migrate/plan.js";
import { validatePolicy } from "../../src/policy/file.js";
import { planFixture } from "../helpers/fixtures.js";

/**
 * A large, varied pair of graphs for the picture: QEMU will not start 200 block nodes in a test, and the picture
 * must stay readable (and fast) at that size. Every kind of topology the fixtures show appears many times over:
 * throttled blockdev disks, -drive disks with generated names, backing chains, running drive-mirrors, and
 * bitmaps that migrate, are skipped, or fail.
 */

const GiB = 1024 ** 3;

function bitmap(name: string, extra: Partial<Bitmap> = {}): Bitmap {
  return {
    name,
    granularity: 65536,
    count: 1048576,
    recording: true,
    busy: false,
    persistent: true,
    inconsistent: false,
    readOnly: false,
    ...extra,
  };
}

function node(name: string, driver: string, extra: Partial<BlockNode> = {}): BlockNode {
  return {
    name,
    generated: name.startsWith("#"),
    driver,
    readOnly: false,
    size: 16 * GiB,
    filename: undefined,
    filter: false,
    filtered: undefined,
    canStoreBitmaps: driver === "qcow2",
    children: [],
    bitmaps: [],
    anonymousBitmaps: 0,
    storedBitmaps: [],
    ...extra,
  };
}

interface Builder {
  nodes: BlockNode[];
  drives: Drive[];
  gen: () => string;
}

function builder(seed: number): Builder {
  let n = seed;
  return {
    nodes: [],
    drives: [],
    gen: () => `#block${String((n += 7) % 1000).padStart(3, "0")}`,
  };
}

/** Adds a qcow2 node over a generated file node, returns the qcow2 node. */
function disk(b: Builder, name: string, bitmaps: Bitmap[], extra: Partial<BlockNode> = {}): BlockNode {
  const file = node(b.gen(), "file", { size: 2 * GiB, readOnly: extra.readOnly ?? false });
  const fmt = node(name, "qcow2", { children: [{ role: "file", node: file.name }], bitmaps, ...extra });
  b.nodes.push(fmt, file);
  return fmt;
}

/**
 * `disks` disk groups per side; each five groups make 16 source nodes, so 63 groups make 201 source
 * nodes. The destination holds the same disks under the names a real destination would have.
 */
export function syntheticGraphs(disks: number): { source: BlockGraph; destination: BlockGraph } {
  const src = builder(100);
  const dst = builder(500);
  for (let i = 0; i < disks; i++) {
    const kind = i % 5;
    const id = String(i).padStart(2, "0");
    if (kind === 0) {
      // Throttled blockdev disk with explicit names on both sides.
      const fmt = disk(src, `fmt${id}`, [bitmap(`backup-${id}-daily`), bitmap(`backup-${id}-weekly`)]);
      const thr = node(`throttle${id}`, "throttle", {
        filter: true,
        filtered: fmt.name,
        children: [{ role: "file", node: fmt.name }],
      });
      src.nodes.push(thr);
      src.drives.push({ name: `drive-scsi${id}`, root: thr.name, driveRoot: fmt.name });
      const dfmt = disk(dst, `fmt${id}`, []);
      dst.drives.push({ name: `drive-scsi${id}`, root: dfmt.name, driveRoot: dfmt.name });
    } else if (kind === 1) {
      // -drive disk: generated names, addressed by the drive name; a bitmap on its file node cannot be.
      const fmt = disk(src, src.gen(), [bitmap(`inc-${id}`), bitmap(`tmp-${id}`, { persistent: false })]);
      const file = src.nodes.at(-1);
      if (file && i % 10 === 1) file.bitmaps.push(bitmap(`onfile-${id}`, { persistent: false }));
      src.drives.push({ name: `drive${id}`, root: fmt.name, driveRoot: fmt.name });
      const dfmt = disk(dst, dst.gen(), []);
      dst.drives.push({ name: `drive${id}`, root: dfmt.name, driveRoot: dfmt.name });
    } else if (kind === 2) {
      // Backing chain: the read-only base keeps its bitmap in the image.
      const base = disk(src, `base${id}`, [bitmap(`base-${id}`, { readOnly: true })], { readOnly: true });
      const top = disk(src, `top${id}`, [bitmap(`chain-${id}`)]);
      top.children.push({ role: "backing", node: base.name });
      src.drives.push({ name: `vd${id}`, root: top.name, driveRoot: top.name });
      const dbase = disk(dst, `base${id}`, [], { readOnly: true });
      const dtop = disk(dst, `top${id}`, []);
      dtop.children.push({ role: "backing", node: dbase.name });
      dst.drives.push({ name: `vd${id}`, root: dtop.name, driveRoot: dtop.name });
    } else if (kind === 3) {
      // Running drive-mirror: the filter sits between the drive and its disk; the mirror target hangs alone.
      const fmt = disk(src, src.gen(), [
        bitmap(i % 15 === 3 ? `weird <name> & "quotes" ${id}` : `mirror-${id}`),
      ]);
      const top = node(src.gen(), "mirror_top", {
        filter: true,
        filtered: fmt.name,
        children: [{ role: "backing", node: fmt.name }],
      });
      src.nodes.push(top);
      disk(src, src.gen(), []);
      src.drives.push({ name: `mirror${id}`, root: top.name, driveRoot: fmt.name });
      const dfmt = disk(dst, dst.gen(), []);
      dst.drives.push({ name: `mirror${id}`, root: dfmt.name, driveRoot: dfmt.name });
    } else {
      // Renamed on the destination (vdX), so the default address misses it unless mapped; one long name.
      const name = i % 10 === 4 ? `scratch-${"x".repeat(120)}-${id}` : `scratch-${id}`;
      disk(src, `disk${id}`, [bitmap(name), bitmap(`keep-${id}`)], { size: 8 * GiB });
      disk(dst, `vd-${id}`, [], { size: 8 * GiB });
    }
  }
  return {
    source: { nodes: src.nodes, drives: src.drives, runState: "running" },
    destination: { nodes: dst.nodes, drives: dst.drives, runState: "inmigrate" },
  };
}

/** A plan over `syntheticGraphs(disks)`, made by the real planner with facts borrowed from a fixture. */
export function syntheticPlan(disks = 63): PlanResult {
  const { source, destination } = syntheticGraphs(disks);
  const base = planFixture("blockdev-same");
  const map = [];
  for (let i = 4; i < disks; i += 10) {
    const id = String(i).padStart(2, "0");
    map.push({ source: `disk${id}`, target: `vd-${id}` });
  }
  return planFromGraphs(
    { ...base.source, graph: source },
    { ...base.destination, graph: destination },
    { policy: validatePolicy({ deny: ["tmp-*"], map }, "synthetic-policy") },
  );
}
