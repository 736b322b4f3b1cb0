import { readFile, writeFile } from "node:fs/promises";
import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import type { ScenarioOptions } from "../../src/lab/scenarios.js";
import { startDriveMirror, writeRange } from "../../src/lab/actions.js";
import { nullBlockdev, qcow2Blockdev } from "../../src/lab/topology.js";
import { layoutOf, setU32, getU32 } from "../qcow2/helpers/bytes.js";
import { sourceAddress, writeTarget, type DiskSpec, type SetupSpec, type StoredSpec } from "./model.js";

/** The files a realized setup uses, so that checks can find "the node that opens this image" on each side. */
export interface DiskFiles {
  /** The source's top image (qcow2, drive). */
  source: string | undefined;
  /** The backing image under it, if any. */
  base: string | undefined;
  /** The destination's image: the same file when shared. */
  destination: string | undefined;
}

export interface Realized {
  source: QemuProcess;
  destination: QemuProcess;
  files: DiskFiles[];
  /** The destination's command line after `-incoming defer` (to start a fresh destination like it). */
  destinationArgs: string[];
}

const IN_USE = 1;

/** Flags stored bitmaps in use, as a QEMU killed while holding the image leaves them. */
async function markInUse(file: string, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const bytes = await readFile(file);
  const layout = await layoutOf(bytes);
  for (const e of layout.entries) {
    if (!names.includes(e.entry.name)) continue;
    const at = e.entry.offset + 12;
    setU32(bytes, at, getU32(bytes, at) | IN_USE);
  }
  await writeFile(file, bytes);
}

async function image(
  lab: Lab,
  name: string,
  size: number,
  stored: StoredSpec[],
  backing?: string,
): Promise<string> {
  const file = await lab.createImage(name, size, {
    ...(backing !== undefined ? { backing } : {}),
    bitmaps: stored.map((s) => ({ name: s.name, granularity: s.granularity, disabled: !s.enabled })),
  });
  await markInUse(
    file,
    stored.filter((s) => s.inUse).map((s) => s.name),
  );
  return file;
}

function driveArg(o: {
  id: string;
  file: string;
  format: "qcow2" | "raw";
  node: string | undefined;
  fileNode: string | undefined;
  readOnly: boolean;
}): string[] {
  const parts = [
    "if=none",
    `id=${o.id}`,
    "file.driver=file",
    `file.filename=${o.file}`,
    `format=${o.format}`,
  ];
  if (o.fileNode !== undefined) parts.push(`file.node-name=${o.fileNode}`);
  if (o.node !== undefined) parts.push(`node-name=${o.node}`);
  if (o.readOnly) parts.push("readonly=on");
  return ["-drive", parts.join(",")];
}

function throttleArgs(group: string, name: string, over: string): string[] {
  return [
    "-object",
    `throttle-group,id=${group},x-bps-total=1000000000`,
    "-blockdev",
    JSON.stringify({ driver: "throttle", "node-name": name, "throttle-group": group, file: over }),
  ];
}

function sourceArgs(d: DiskSpec, f: DiskFiles): string[] {
  const i = d.index;
  const out: string[] = [];
  if (d.form === "null") {
    out.push(...nullBlockdev(d.node ?? `disk${i}`, d.size));
  } else if (d.form === "qcow2") {
    out.push(
      ...qcow2Blockdev({
        nodeName: d.node ?? `disk${i}`,
        file: f.source ?? "",
        ...(d.fileNode !== undefined ? { fileNodeName: d.fileNode } : {}),
        ...(d.backing && f.base !== undefined
          ? {
              backing: {
                ...(d.backing.node !== undefined ? { nodeName: d.backing.node } : {}),
                file: f.base,
              },
            }
          : {}),
      }),
    );
  } else {
    out.push(
      ...driveArg({
        id: d.drive ?? `drive${i}`,
        file: f.source ?? "",
        format: "qcow2",
        node: d.node,
        fileNode: d.fileNode,
        readOnly: false,
      }),
    );
  }
  if (d.throttle !== undefined) out.push(...throttleArgs(`tg${i}`, d.throttle, d.node ?? ""));
  return out;
}

function destinationArgs(d: DiskSpec, f: DiskFiles): string[] {
  const t = d.dst;
  if (!t) return [];
  const i = d.index;
  const out: string[] = [];
  const file = f.destination ?? "";
  switch (t.form) {
    case "null":
      out.push(
        "-blockdev",
        JSON.stringify({
          driver: "null-co",
          "node-name": t.node,
          size: t.size,
          ...(t.readOnly ? { "read-only": true } : {}),
        }),
      );
      break;
    case "raw":
      if (t.drive !== undefined) {
        out.push(
          ...driveArg({
            id: t.drive,
            file,
            format: "raw",
            node: t.node,
            fileNode: undefined,
            readOnly: t.readOnly,
          }),
        );
        break;
      }
      out.push(
        "-blockdev",
        JSON.stringify({
          driver: "raw",
          "node-name": t.node,
          ...(t.readOnly ? { "read-only": true } : {}),
          file: { driver: "file", filename: file },
        }),
      );
      break;
    case "qcow2":
      out.push(
        ...qcow2Blockdev({
          nodeName: t.node ?? `n${i}`,
          file,
          readOnly: t.readOnly,
          // A shared image names its backing file: open it as the source does (named or not).
          ...(d.shared && d.backing && f.base !== undefined
            ? {
                backing: {
                  ...(t.backingNode !== undefined ? { nodeName: t.backingNode } : {}),
                  file: f.base,
                },
              }
            : {}),
        }),
      );
      break;
    case "drive":
      out.push(
        ...driveArg({
          id: t.drive ?? `d${i}`,
          file,
          format: "qcow2",
          node: t.node,
          fileNode: undefined,
          readOnly: t.readOnly,
        }),
      );
      break;
  }
  if (t.throttle !== undefined && t.node !== undefined)
    out.push(...throttleArgs(`tg${i}`, t.throttle, t.node));
  return out;
}

/** Creates the images, starts both QEMUs, and makes the bitmaps, writes, exports and jobs of the spec. */
export async function realize(lab: Lab, spec: SetupSpec, options: ScenarioOptions): Promise<Realized> {
  const files: DiskFiles[] = [];
  for (const d of spec.disks) {
    const f: DiskFiles = { source: undefined, base: undefined, destination: undefined };
    if (d.form !== "null") {
      if (d.backing) f.base = await image(lab, `b${d.index}.qcow2`, d.size, d.backing.stored);
      f.source = await image(lab, `s${d.index}.qcow2`, d.size, d.stored, f.base);
    }
    const t = d.dst;
    if (t && t.form !== "null") {
      if (d.shared) f.destination = f.source;
      else if (t.form === "raw")
        f.destination = await lab.createImage(`d${d.index}.raw`, t.size, { format: "raw" });
      else f.destination = await image(lab, `d${d.index}.qcow2`, t.size, t.stored);
    }
    files.push(f);
  }
  const srcArgs = spec.disks.flatMap((d, i) =>
    sourceArgs(d, files[i] ?? { source: undefined, base: undefined, destination: undefined }),
  );
  const dstArgs = spec.disks.flatMap((d, i) =>
    destinationArgs(d, files[i] ?? { source: undefined, base: undefined, destination: undefined }),
  );
  const source = await lab.start({
    label: "src",
    args: [...srcArgs, ...(options.sourceArgs ?? [])],
    ...(options.sourceBuild ? { build: options.sourceBuild } : {}),
  });
  const destination = await lab.start({
    label: "dst",
    args: dstArgs,
    incoming: "defer",
    paused: true,
    ...(options.destinationBuild ? { build: options.destinationBuild } : {}),
  });
  const m = source.monitor;
  let nbdStarted = false;
  let exports = 0;
  for (const d of spec.disks) {
    const addr = sourceAddress(d);
    for (const b of d.bitmaps)
      await m.addBitmap(addr, b.name, { granularity: b.granularity, persistent: b.persistent });
    if (d.fileBitmaps.length > 0) {
      const fileNode = d.fileNode ?? (await protocolNode(source, files[d.index]?.source ?? ""));
      for (const b of d.fileBitmaps) await m.addBitmap(fileNode, b.name, { granularity: b.granularity });
    }
    const half = Math.ceil(d.writes.length / 2);
    for (const [off, len] of d.writes.slice(0, half)) await writeRange(m, writeTarget(d), off, len);
    for (const b of d.bitmaps) if (!b.enabled) await m.disableBitmap(addr, b.name);
    for (const [off, len] of d.writes.slice(half)) await writeRange(m, writeTarget(d), off, len, 0xcd);
    for (const b of d.bitmaps.filter((x) => x.busy)) {
      if (!nbdStarted) {
        await m.run("nbd-server-start", { addr: { type: "unix", data: { path: lab.path("nbd.sock") } } });
        nbdStarted = true;
      }
      await m.run("block-export-add", {
        type: "nbd",
        id: `exp${exports}`,
        name: `exp${exports++}`,
        "node-name": await formatNode(source, d),
        writable: false,
        bitmaps: [b.name],
      });
    }
  }
  for (const d of spec.disks) {
    if (d.mirror && d.drive !== undefined)
      await startDriveMirror(m, d.drive, lab.path(`mirror${d.index}.qcow2`), `mirror${d.index}`);
  }
  for (const d of spec.disks) {
    const t = d.dst;
    if (!t) continue;
    const addr = t.drive ?? t.node ?? "";
    for (const b of t.ram) await destination.monitor.addBitmap(addr, b.name, { granularity: b.granularity });
  }
  return { source, destination, files, destinationArgs: dstArgs };
}

async function protocolNode(proc: QemuProcess, file: string): Promise<string> {
  const nodes = await proc.monitor.namedBlockNodes();
  const n = nodes.find((x) => x.drv === "file" && (x.file === file || x.image.filename === file));
  if (!n) throw new Error(`no protocol node for ${file}`);
  return n["node-name"];
}

/** The format node's node-name (generated for a drive without node-name). */
async function formatNode(proc: QemuProcess, d: DiskSpec): Promise<string> {
  if (d.node !== undefined) return d.node;
  const backends = await proc.monitor.blockBackends();
  const bb = backends.find((b) => b.device === d.drive);
  const name = bb?.inserted?.["node-name"];
  if (name === undefined) throw new Error(`no node under drive ${d.drive ?? "?"}`);
  return name;
}
