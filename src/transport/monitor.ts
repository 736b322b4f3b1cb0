import net from "node:net";
import { QmpClient, type QmpClientOptions } from "../qmp/client.js";
import { QmpConnectError, QmpError } from "../qmp/errors.js";
import { formatMonitorAddress, parseSshAddress, type SshAddress } from "../qmp/address.js";
import { carriedBy } from "./connections.js";
import { TransportError } from "./errors.js";
import { SshConnection, sshReason } from "./ssh.js";

export interface SshMonitorOptions extends QmpClientOptions {
  /** Environment for the ssh client (`BITFERRY_SSH_COMMAND`); default process.env. */
  env?: NodeJS.ProcessEnv;
}

export { sshConnectionOf } from "./connections.js";

/**
 * Opens the QMP monitor at `ssh://[USER@]HOST[:PORT]/PATH`: one SSH connection to HOST (the system's `ssh`, the
 * user's configuration, BatchMode), a local forward to the unix socket PATH there, and a QMP client on it. The
 * connection lives as long as the client: closing the client (or losing it) closes the connection. Every failure
 * is a QmpConnectError naming the address, with ssh's own reason.
 */
export async function connectSshMonitor(
  address: string | SshAddress,
  options: SshMonitorOptions = {},
): Promise<QmpClient> {
  const addr = typeof address === "string" ? parseSshAddress(address) : address;
  const where = formatMonitorAddress(addr);
  const label = options.label ?? addr.host;
  let conn: SshConnection;
  try {
    conn = await SshConnection.open(
      {
        host: addr.host,
        ...(addr.user !== undefined ? { user: addr.user } : {}),
        ...(addr.port !== undefined ? { port: addr.port } : {}),
      },
      {
        label,
        requireSocket: addr.path,
        ...(options.connectTimeoutMs !== undefined ? { timeoutMs: options.connectTimeoutMs * 2 } : {}),
        ...(options.env ? { env: options.env } : {}),
      },
    );
  } catch (err) {
    if (err instanceof TransportError) throw new QmpConnectError(where, `ssh: ${err.reason}`, { cause: err });
    throw err;
  }
  try {
    const fwd = await conn.forwardLocal(addr.path, "qmp.sock");
    const mark = conn.stderr.length;
    const socket = await openUnix(fwd.listen);
    let client: QmpClient;
    try {
      client = await QmpClient.connect(socket, options);
    } catch (err) {
      // The forward accepted the connection, the remote end did not: ssh says why ("connect failed: ...").
      await delay(50);
      const said = sshReason(conn.stderr.slice(mark)).replace(/^channel \d+: open failed: /, "");
      if (said !== "")
        throw new QmpConnectError(
          where,
          `ssh: ${said} (sshd on ${addr.host} could not connect to ${addr.path}: no QEMU accepts connections there)`,
          { cause: err },
        );
      if (err instanceof QmpError)
        throw new QmpConnectError(where, err.message.replace(/^cannot connect to QMP monitor at \S+: /, ""), {
          cause: err,
        });
      throw err;
    }
    carriedBy(client, conn);
    void client.closed.then(() => conn.close());
    // A connection that drops takes the forwarded socket with it: the client sees its monitor close unexpectedly,
    // as with a QEMU that died, and the run reports it the same way.
    return client;
  } catch (err) {
    await conn.close();
    if (err instanceof TransportError) throw new QmpConnectError(where, `ssh: ${err.reason}`, { cause: err });
    throw err;
  }
}

function openUnix(file: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(file);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
