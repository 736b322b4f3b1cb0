/** Command-line builders for the block topologies the lab starts. */

export interface Qcow2NodeOptions {
  nodeName?: string;
  file: string;
  /** Node-name of the protocol (file) node; generated when absent. */
  fileNodeName?: string;
  readOnly?: boolean;
  /** A backing node given inline (its own options) or by node-name; null = no backing. */
  backing?: Qcow2NodeOptions | string | null;
}

function qcow2Json(o: Qcow2NodeOptions): Record<string, unknown> {
  const node: Record<string, unknown> = {
    driver: "qcow2",
    file: { driver: "file", filename: o.file, ...(o.fileNodeName ? { "node-name": o.fileNodeName } : {}) },
  };
  if (o.nodeName !== undefined) node["node-name"] = o.nodeName;
  if (o.readOnly) node["read-only"] = true;
  if (o.backing === null) node.backing = null;
  else if (typeof o.backing === "string") node.backing = o.backing;
  else if (o.backing !== undefined)
    node.backing = qcow2Json({ ...o.backing, readOnly: o.backing.readOnly ?? true });
  return node;
}

/** `-blockdev` for a qcow2 node over a file node. */
export function qcow2Blockdev(o: Qcow2NodeOptions): string[] {
  return ["-blockdev", JSON.stringify(qcow2Json(o))];
}

/** `-blockdev` for a null-co node: any size, no storage, bitmaps work. */
export function nullBlockdev(nodeName: string, size: number): string[] {
  return ["-blockdev", JSON.stringify({ driver: "null-co", "node-name": nodeName, size })];
}

export interface DriveOptions {
  id: string;
  file: string;
  format?: "qcow2" | "raw";
  nodeName?: string;
  readOnly?: boolean;
}

/** `-drive if=none`: a named BlockBackend (drive) whose format node gets a generated name unless given one. */
export function drive(o: DriveOptions): string[] {
  const parts = [`if=none`, `id=${o.id}`, `file=${o.file}`, `format=${o.format ?? "qcow2"}`];
  if (o.nodeName !== undefined) parts.push(`node-name=${o.nodeName}`);
  if (o.readOnly) parts.push("readonly=on");
  return ["-drive", parts.join(",")];
}
