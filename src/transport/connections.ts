import type { QmpClient } from "../qmp/client.js";
import type { SshConnection } from "./ssh.js";

/**
 * Which SSH connection carries which monitor. Apart from ssh.ts so that code asking (the run, closing the CLI's
 * monitors) does not load child_process for a local run.
 */
const connections = new WeakMap<QmpClient, SshConnection>();

/** The SSH connection that carries a monitor opened by connectSshMonitor (the run adds its tunnels to it). */
export function sshConnectionOf(client: QmpClient): SshConnection | undefined {
  return connections.get(client);
}

export function carriedBy(client: QmpClient, conn: SshConnection): void {
  connections.set(client, conn);
}
