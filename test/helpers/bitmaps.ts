import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";

export interface BitmapState {
  node: string;
  name: string;
  count: number;
  granularity: number;
  busy: boolean;
  persistent: boolean;
  recording: boolean;
  inconsistent: boolean;
  sha256: string;
}

/** Every named bitmap of a QEMU, keyed "node/name", with its content hash. */
export async function bitmapStates(proc: QemuProcess): Promise<Map<string, BitmapState>> {
  const out = new Map<string, BitmapState>();
  for (const n of await proc.monitor.namedBlockNodes()) {
    for (const b of n["dirty-bitmaps"] ?? []) {
      if (b.name === undefined) continue;
      out.set(`${n["node-name"]}/${b.name}`, {
        node: n["node-name"],
        name: b.name,
        count: b.count,
        granularity: b.granularity,
        busy: b.busy,
        persistent: b.persistent,
        recording: b.recording,
        inconsistent: b.inconsistent ?? false,
        sha256: await proc.monitor.bitmapSha256(n["node-name"], b.name),
      });
    }
  }
  return out;
}

/** The bitmaps stored in a qcow2 image, as qemu-img reports them (run it only when no QEMU holds the image). */
export async function storedBitmaps(
  lab: Lab,
  file: string,
): Promise<{ name: string; flags: string[]; granularity: number }[]> {
  const info = JSON.parse(await lab.qemuImg(["info", "--output=json", file])) as {
    "format-specific"?: { data?: { bitmaps?: { name: string; flags: string[]; granularity: number }[] } };
  };
  return info["format-specific"]?.data?.bitmaps ?? [];
}
