import { readFile } from "node:fs/promises";
import { QmpClient } from "../qmp/client.js";
import { QmpConnectError, QmpError } from "../qmp/errors.js";
import { formatMonitorAddress, parseMonitorAddress } from "../qmp/address.js";
import { QemuMonitor } from "../qemu/monitor.js";
import { sshConnectionOf } from "../transport/connections.js";
import { DEFAULT_POLICY } from "../policy/defaults.js";
import type { Policy } from "../policy/types.js";

/**
 * How long the CLI waits for any one reply. A monitor that never answers (a wedged QEMU, a reply cut off mid-line)
 * would otherwise hang a command for good, past --timeout and a first Ctrl-C, which are checked between commands.
 */
export const COMMAND_TIMEOUT_MS = 60_000;

/**
 * QEMU answers in milliseconds, except while the source holds its main lock through the switchover, which lasts
 * about as long as downtime-limit allows: `--max-downtime` may raise that, so the wait grows with it.
 */
export function commandTimeoutFor(maxDowntimeMs: number | undefined): number {
  return Math.max(COMMAND_TIMEOUT_MS, 4 * (maxDowntimeMs ?? 0));
}

/**
 * Connects to a monitor at the start of a command. Every way of not getting a working monitor is a
 * QmpConnectError (exit 3) that names the address; a malformed address is a usage error (exit 2).
 */
export async function connectMonitor(
  address: string,
  label: string,
  commandTimeoutMs = COMMAND_TIMEOUT_MS,
): Promise<QemuMonitor> {
  const parsed = parseMonitorAddress(address);
  const where = formatMonitorAddress(parsed);
  const options = { label, connectTimeoutMs: 10_000, commandTimeoutMs };
  try {
    if (parsed.type === "ssh") {
      // Loaded only for an ssh:// address: a local run never starts ssh.
      const { connectSshMonitor } = await import("../transport/monitor.js");
      return new QemuMonitor(await connectSshMonitor(parsed, options));
    }
    return new QemuMonitor(await QmpClient.connect(parsed, options));
  } catch (err) {
    if (err instanceof QmpConnectError)
      throw new QmpConnectError(
        where,
        `${label}: ${err.message.replace(/^cannot connect to QMP monitor at \S+: /, "")}`,
        { cause: err },
      );
    if (err instanceof QmpError) throw new QmpConnectError(where, `${label}: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * Connects to both monitors at once (one negotiation's wait instead of two). Whatever connected is pushed on
 * `monitors` so the caller closes it; when both fail, the source's error is the one reported, as when they were
 * connected one after the other.
 */
export async function connectBoth(
  sourceAddress: string,
  destinationAddress: string,
  monitors: QemuMonitor[],
  commandTimeoutMs = COMMAND_TIMEOUT_MS,
): Promise<{ source: QemuMonitor; destination: QemuMonitor }> {
  const [s, d] = await Promise.allSettled([
    connectMonitor(sourceAddress, "source", commandTimeoutMs),
    connectMonitor(destinationAddress, "destination", commandTimeoutMs),
  ]);
  if (s.status === "fulfilled") monitors.push(s.value);
  if (d.status === "fulfilled") monitors.push(d.value);
  if (s.status === "rejected") throw s.reason;
  if (d.status === "rejected") throw d.reason;
  return { source: s.value, destination: d.value };
}

export async function loadPolicy(file: string | undefined): Promise<Policy> {
  if (file === undefined) return DEFAULT_POLICY;
  // The YAML parser loads only when there is a policy file to parse.
  const { parsePolicy, PolicyError } = await import("../policy/file.js");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === "ENOENT" ? "no such file" : e.code === "EISDIR" ? "is a directory" : e.message;
    throw new PolicyError(`${file}: cannot read policy file: ${why}`);
  }
  return parsePolicy(text, file);
}

/** Closes the monitors a command opened, and waits for the SSH connections that carried any of them to end. */
export async function closeMonitors(monitors: readonly QemuMonitor[]): Promise<void> {
  for (const m of monitors) m.qmp.close();
  await Promise.all(monitors.map((m) => sshConnectionOf(m.qmp)?.close() ?? Promise.resolve()));
}
