import type { Lab } from "../../src/lab/lab.js";
import type { QemuProcess } from "../../src/lab/process.js";
import { QmpCommandError } from "../../src/qmp/errors.js";
import type { Findings } from "../fuzz/checks.js";
import { bitmapStates, type BitmapState } from "./bitmaps.js";

/** Everything bitferry may change on a QEMU, read raw. */
export interface SideState {
  runState: string;
  capabilities: unknown;
  parameters: unknown;
  nodes: string[];
  exports: unknown;
  jobs: unknown;
  nbdServer: "running" | "stopped";
  /** The user-creatable objects (`object-add`: the run's TLS credentials), by id. */
  objects: string[];
  bitmaps: Map<string, BitmapState>;
  images: Map<string, string>;
}

export async function sideState(lab: Lab, proc: QemuProcess): Promise<SideState> {
  const q = proc.qmp;
  const params = (await q.execute("query-migrate-parameters")) as Record<string, unknown>;
  // QEMU cannot unset block-bitmap-mapping (DESIGN section 4 item 9); every run sets its own.
  delete params["block-bitmap-mapping"];
  const named = await proc.monitor.namedBlockNodes();
  const images = new Map<string, string>();
  for (const n of named) {
    const file = n.image.filename ?? n.file;
    if (n.drv === "qcow2" && file !== undefined) images.set(file, n["node-name"]);
  }
  return {
    runState: (await proc.monitor.status()).status,
    capabilities: await q.execute("query-migrate-capabilities"),
    parameters: params,
    nodes: named.map((n) => `${n["node-name"]} (${n.drv}${n.ro ? ", ro" : ""})`).sort(),
    exports: await q.execute("query-block-exports"),
    jobs: await q.execute("query-block-jobs"),
    nbdServer: await nbdServerState(lab, proc),
    objects: await objectIds(proc),
    bitmaps: await bitmapStates(proc),
    images,
  };
}

/** QEMU has no query for its NBD server: starting one tells whether one runs (and is stopped again at once). */
async function nbdServerState(lab: Lab, proc: QemuProcess): Promise<"running" | "stopped"> {
  const sock = lab.path(`probe-${proc.pid}.sock`);
  try {
    await proc.monitor.run("nbd-server-start", { addr: { type: "unix", data: { path: sock } } });
  } catch {
    return "running";
  }
  await proc.monitor.run("nbd-server-stop");
  return "stopped";
}

/** QEMU makes /objects on first use: a QEMU that never had one answers DeviceNotFound, which means none. */
async function objectIds(proc: QemuProcess): Promise<string[]> {
  try {
    const list = (await proc.qmp.execute("qom-list", { path: "/objects" })) as {
      name: string;
      type: string;
    }[];
    return list
      .filter((p) => p.type.startsWith("child<"))
      .map((p) => `${p.name} (${p.type.slice(6, -1)})`)
      .sort();
  } catch (err) {
    if (err instanceof QmpCommandError && err.errorClass === "DeviceNotFound") return [];
    throw err;
  }
}

export function compare(f: Findings, side: string, after: SideState, before: SideState): void {
  f.equal(after.runState, before.runState, `${side} run state`);
  f.equal(after.capabilities, before.capabilities, `${side} capabilities`);
  f.equal(after.parameters, before.parameters, `${side} migration parameters`);
  f.equal(after.nodes, before.nodes, `${side} block nodes`);
  f.equal(after.exports, before.exports, `${side} exports`);
  f.equal(after.jobs, before.jobs, `${side} block jobs`);
  f.equal(after.nbdServer, before.nbdServer, `${side} NBD server`);
  f.equal(after.objects, before.objects, `${side} objects`);
  f.equal([...after.bitmaps.keys()].sort(), [...before.bitmaps.keys()].sort(), `${side} bitmaps`);
  for (const [key, b] of before.bitmaps) {
    const a = after.bitmaps.get(key);
    if (a) f.equal(a, b, `${side} bitmap ${key}`);
  }
}
