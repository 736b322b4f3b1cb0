import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { Lab } from "../../../src/lab/lab.js";
import { qcow2Blockdev } from "../../../src/lab/topology.js";
import type { InspectExtent } from "../../../src/qcow2/inspect.js";

const execFileP = promisify(execFile);

/** Runs a tool and returns its stdout; the error names the command and carries its stderr. */
export async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.stderr?.trim() ?? e.message}`, { cause: err });
  }
}

/** Writes guest data with qemu-io (opens the image read-write: QEMU re-stores its bitmaps on close). */
export async function qemuIoWrite(
  file: string,
  ranges: readonly (readonly [number, number])[],
): Promise<void> {
  const args = ["-f", "qcow2"];
  for (const [off, len] of ranges) args.push("-c", `write -P 0x5a ${off} ${len}`);
  await run("qemu-io", [...args, file]);
}

export interface QemuBitmapView {
  name: string;
  granularity: number;
  count: number;
  recording: boolean;
  inconsistent: boolean;
  sha256: string;
}

let viewCounter = 0;

/**
 * What QEMU itself loads from the image: opens it read-only in a lab QEMU (flags stay untouched), reads every
 * bitmap's count and x-debug-block-dirty-bitmap-sha256, and stops that QEMU.
 */
export async function qemuView(lab: Lab, file: string): Promise<Map<string, QemuBitmapView>> {
  const vm = await lab.start({
    label: `ro${++viewCounter}`,
    args: qcow2Blockdev({ nodeName: "ro", file, readOnly: true }),
  });
  try {
    const nodes = await vm.monitor.namedBlockNodes();
    const node = nodes.find((n) => n["node-name"] === "ro");
    const out = new Map<string, QemuBitmapView>();
    for (const b of node?.["dirty-bitmaps"] ?? []) {
      const name = b.name ?? "";
      out.set(name, {
        name,
        granularity: b.granularity,
        count: b.count,
        recording: b.recording,
        inconsistent: b.inconsistent ?? false,
        sha256: await vm.monitor.bitmapSha256("ro", name),
      });
    }
    return out;
  } finally {
    await vm.stop();
  }
}

/** nbdinfo's arguments for the dirty map of a bitmap, served read-only by a qemu-nbd it starts itself. */
export function nbdMapArgs(bitmap: string, file: string): string[] {
  return [
    "--json",
    `--map=qemu:dirty-bitmap:${bitmap}`,
    "--",
    "[",
    "qemu-nbd",
    "-r",
    "-f",
    "qcow2",
    "-B",
    bitmap,
    file,
    "]",
  ];
}

/** The dirty extents in nbdinfo's `--json --map` output, adjacent ones merged. */
export function dirtyFromNbdinfo(json: string): InspectExtent[] {
  const rows = JSON.parse(json) as { offset: number; length: number; type: number }[];
  const merged: InspectExtent[] = [];
  for (const r of rows) {
    if ((r.type & 1) === 0) continue;
    const last = merged[merged.length - 1];
    if (last !== undefined && last.start + last.length === r.offset) last.length += r.length;
    else merged.push({ start: r.offset, length: r.length });
  }
  return merged;
}

/** Dirty extents as QEMU's NBD server reports them, read by nbdinfo (the reference's CI oracle). */
export async function nbdExtents(file: string, bitmap: string): Promise<InspectExtent[]> {
  return dirtyFromNbdinfo(await run("nbdinfo", nbdMapArgs(bitmap, file)));
}

/**
 * The extents a bitmap of granularity `g` must show after guest writes of `ranges` on a `size`-byte disk:
 * every granule a write touched, merged, the last one clipped to the size. Built granule by granule, the slow and
 * obvious way, independently of the reader's run detection.
 */
export function expectedExtents(
  ranges: readonly (readonly [number, number])[],
  g: number,
  size: number,
): { extents: InspectExtent[]; dirtyBytes: number } {
  const granules = new Set<number>();
  for (const [off, len] of ranges) {
    for (let i = Math.floor(off / g); i * g < off + len; i++) granules.add(i);
  }
  const sorted = [...granules].sort((a, b) => a - b);
  const extents: InspectExtent[] = [];
  for (const i of sorted) {
    const start = i * g;
    const end = Math.min((i + 1) * g, size);
    const last = extents[extents.length - 1];
    if (last !== undefined && last.start + last.length === start) last.length = end - last.start;
    else extents.push({ start, length: end - start });
  }
  return { extents, dirtyBytes: sorted.length * g };
}
