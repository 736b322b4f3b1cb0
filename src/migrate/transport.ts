import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";
import type { StreamTransport } from "../policy/transport.js";
import type { QemuMonitor } from "../qemu/monitor.js";
import { parseSocketAddress } from "../qmp/address.js";
import { TransportError } from "../transport/errors.js";
import { sshConnectionOf } from "../transport/connections.js";
import type { SshConnection } from "../transport/ssh.js";
import { shellQuote } from "../transport/ssh-command.js";
import {
  addTlsCreds,
  isTlsFailure,
  removeTlsCreds,
  resetMigrationTls,
  setMigrationTls,
} from "../transport/tls.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import { refused, undoIfPresent, type Side } from "./sides.js";

/**
 * Two hosts (DESIGN section 4): how the stream and the disk copy travel, set up as steps of the run before the
 * incoming side (setup.ts): the private socket directories of this run on each host, the SSH forwards that join
 * the destination's unix socket to one on the source's host (through bitferry's host when it is a third one), the
 * TLS credential objects and the migration's TLS parameters; the addresses go into `ctx.endpoints`. Every one is a
 * step whose clean removes it, so a failed run, a successful one and an interrupted one all leave both hosts and
 * both QEMUs as they were; an SSH connection that drops mid-run fails the run with TUNNEL_FAILED.
 */

/** What the run's transport is, beyond the addresses it puts in `ctx.endpoints`. */
export interface Route {
  /** How the migration stream travels (`migration.transport` of the result). */
  migration: StreamTransport;
  /** --copy-storage: how the NBD connection travels; undefined without --copy-storage. */
  nbd: StreamTransport | undefined;
  /** `tls-creds`/`tls-hostname` for nbd-server-start and the source's NBD client (a TCP NBD with --tls-creds). */
  nbdTls: { id: string; hostname: string } | undefined;
  /** The id of the TLS objects (the same on both sides) when QEMU's TLS is used. */
  tlsId: string | undefined;
}

interface Ends {
  /** The socket as the destination sees it (it listens there). */
  destination: string;
  /** The socket as the source sees it (it connects there). */
  source: string;
}

/** The run's transport: resolves the route, pushes its steps, and leaves it on `ctx.route`. */
export async function setupTransport(ctx: RunContext): Promise<void> {
  const o = ctx.o;
  const conns = { source: sshConnectionOf(ctx.src.mon.qmp), destination: sshConnectionOf(ctx.dst.mon.qmp) };
  const remote = conns.source !== undefined || conns.destination !== undefined;
  const tag = `${process.pid.toString(36)}-${(Date.now() % 1_000_000).toString(36)}`;
  watchConnections(ctx, conns);
  const dirs = new RunDirs(ctx, conns, tag);

  const ends = ctx.endpoints;
  let migration: StreamTransport;
  if (o.uri === undefined) {
    if (!remote)
      throw new RunError(
        "QEMU_ERROR",
        "no migration URI: give uri, or reach a side through ssh:// for the tunnel",
      );
    const t = await tunnel(ctx, conns, dirs, "mig.sock", "the migration stream");
    migration = "ssh-tunnel";
    ends.incoming = `unix:${t.destination}`;
    ends.outgoing = `unix:${t.source}`;
  } else {
    const a = parseSocketAddress(o.uri);
    migration = o.tlsCreds !== undefined ? "tls" : a.type === "unix" ? "unix" : "plaintext";
  }
  // Known from here on, for the result of a run that fails in the steps below.
  const route: Route = { migration, nbd: undefined, nbdTls: undefined, tlsId: undefined };
  ctx.route = route;

  if (o.tlsCreds !== undefined) {
    const tlsId = `bf-tls-${tag}`;
    route.tlsId = tlsId;
    await setupTls(ctx, o.tlsCreds, tlsId, o.tlsHostname ?? hostOf(o.uri));
  }

  if (o.copyStorage) {
    if (o.nbd !== undefined) {
      const a = parseSocketAddress(o.nbd);
      route.nbd = route.tlsId !== undefined ? "tls" : a.type === "unix" ? "unix" : "plaintext";
      const hostname = o.tlsHostname ?? (a.type === "tcp" ? a.host : hostOf(o.uri));
      if (route.tlsId !== undefined && hostname !== undefined) route.nbdTls = { id: route.tlsId, hostname };
    } else if (remote) {
      const t = await tunnel(ctx, conns, dirs, "nbd.sock", "the disk copy");
      route.nbd = "ssh-tunnel";
      ends.nbdListen = `unix:${t.destination}`;
      ends.nbdConnect = `unix:${t.source}`;
    } else {
      route.nbd = "unix";
    }
  }
}

/** MIGRATION_FAILED, or TLS_FAILED when QEMU's TLS is in use and QEMU's reason is about it. */
export function failureCodeFor(
  ctx: RunContext,
  reason: string | undefined,
): "MIGRATION_FAILED" | "TLS_FAILED" {
  return ctx.route?.tlsId !== undefined && reason !== undefined && isTlsFailure(reason)
    ? "TLS_FAILED"
    : "MIGRATION_FAILED";
}

function hostOf(uri: string | undefined): string | undefined {
  if (uri === undefined) return undefined;
  const a = parseSocketAddress(uri);
  return a.type === "tcp" ? a.host : undefined;
}

/** Step "ssh-watch": an SSH connection of the run that drops fails the run at once, as TUNNEL_FAILED. */
function watchConnections(ctx: RunContext, conns: Record<Side["name"], SshConnection | undefined>): void {
  const offs: (() => void)[] = [];
  for (const [name, conn] of Object.entries(conns)) {
    if (!conn) continue;
    offs.push(
      conn.onLost((exit) => {
        ctx.abort.abort(
          new RunError(
            "TUNNEL_FAILED",
            `the SSH connection to the ${name} (${conn.where}) dropped during ${ctx.phase}: ${exit.reason || "ssh exited"}`,
          ),
        );
      }),
    );
  }
  if (offs.length === 0) return;
  ctx.steps.push({
    name: "ssh-watch",
    side: "local",
    what: "the watch on the SSH connections",
    clean: () => {
      for (const off of offs) off();
      return Promise.resolve();
    },
  });
}

/** Step "socket-dir": this run's private directory on a host, made on first use, removed with everything in it. */
class RunDirs {
  private readonly made = new Map<string, string>();

  constructor(
    private readonly ctx: RunContext,
    private readonly conns: Record<Side["name"], SshConnection | undefined>,
    readonly tag: string,
  ) {}

  async on(where: Side["name"] | "local"): Promise<string> {
    const known = this.made.get(where);
    if (known !== undefined) return known;
    const conn = where === "local" ? undefined : this.conns[where];
    let dir: string;
    if (conn) {
      dir = `${conn.remoteDir}/run-${this.tag}`;
      await tunnelStep(`making ${dir} on the ${where}'s host`, () =>
        conn.exec(`mkdir -m 700 ${shellQuote(dir)}`),
      );
      this.ctx.steps.push({
        name: "socket-dir",
        side: where === "local" ? "local" : where,
        what: `the directory ${dir} on ${conn.where}`,
        clean: async () => {
          // The connection's own remote command removes its whole directory when the connection ends.
          if (conn.alive) await conn.exec(`rm -rf -- ${shellQuote(dir)}`);
        },
      });
    } else {
      dir = mkdtempSync(path.join("/tmp", "bf-run-"));
      this.ctx.steps.push({
        name: "socket-dir",
        side: "local",
        what: `the directory ${dir}`,
        clean: () => {
          rmSync(dir, { recursive: true, force: true });
          return Promise.resolve();
        },
      });
    }
    this.made.set(where, dir);
    return dir;
  }
}

/**
 * Steps "tunnel": joins a unix socket the destination will listen on to one the source can connect to. The
 * destination's end is in this run's directory on its host (or on this host when it is local); a local forward of
 * the destination's connection brings it to this host; a remote forward of the source's connection takes it on to
 * the source's host when the source is remote too. Each forward's clean removes it.
 */
async function tunnel(
  ctx: RunContext,
  conns: Record<Side["name"], SshConnection | undefined>,
  dirs: RunDirs,
  name: string,
  what: string,
): Promise<Ends> {
  const { source: srcConn, destination: dstConn } = conns;
  let destination: string;
  let here: string;
  if (dstConn) {
    destination = `${await dirs.on("destination")}/${name}`;
    const fwd = await tunnelStep(`forwarding ${what} from the destination`, () =>
      dstConn.forwardLocal(destination, `${path.basename(name, ".sock")}-${dirs.tag}.sock`),
    );
    ctx.steps.push({
      name: "tunnel",
      side: "local",
      what: `the SSH forward of ${what} ${fwd.listen} → ${dstConn.where}${destination}`,
      clean: () => dstConn.cancel(fwd),
    });
    here = fwd.listen;
  } else {
    destination = here = `${await dirs.on("local")}/${name}`;
  }
  if (!srcConn) return { destination, source: here };
  const source = `${await dirs.on("source")}/${name}`;
  const fwd = await tunnelStep(`forwarding ${what} to the source`, () => srcConn.forwardRemote(here, source));
  ctx.steps.push({
    name: "tunnel",
    side: "local",
    what: `the SSH forward of ${what} ${srcConn.where}${source} → ${here}`,
    clean: () => srcConn.cancel(fwd),
  });
  return { destination, source };
}

async function tunnelStep<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof TransportError)
      throw new RunError("TUNNEL_FAILED", `${what}: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * Steps "tls-creds" (the server object on the destination, the client object on the source) and "tls-params"
 * (`tls-creds` on both sides, `tls-hostname` on the source). Their cleans reset the parameters with "" and delete
 * the objects; the NBD server and client that use the objects are later steps, so they are gone by then. Each is
 * recorded before its command is sent: QEMU makes the object or takes the parameter even when the reply is lost
 * to --timeout, Ctrl-C or a reply timeout, so the cleans must also accept what was never made.
 */
async function setupTls(
  ctx: RunContext,
  dir: string,
  id: string,
  hostname: string | undefined,
): Promise<void> {
  for (const [side, endpoint] of [
    [ctx.dst, "server"],
    [ctx.src, "client"],
  ] as const) {
    await ctx.steps.sent(
      {
        name: "tls-creds",
        side: side.name,
        what: `the TLS ${endpoint} credentials '${id}' (${dir})`,
        // QEMU 7.2 and 10.0 both answer the delete of an unknown id with "object '<id>' not found".
        clean: () => side.undo((m) => undoIfPresent(() => removeTlsCreds(m, id), absentObject(id))),
      },
      () => tlsStep(ctx, side, (m) => addTlsCreds(m, { id, dir, endpoint })),
      refused,
    );
  }
  for (const side of [ctx.dst, ctx.src]) {
    await ctx.steps.sent(
      {
        name: "tls-params",
        side: side.name,
        what: `the ${side.name}'s tls-creds${side === ctx.src ? " and tls-hostname" : ""}`,
        // QEMU takes "" whether or not the parameters were ever set (7.2 and 10.0).
        clean: () => side.undo((m) => resetMigrationTls(m)),
      },
      () => tlsStep(ctx, side, (m) => setMigrationTls(m, id, side === ctx.src ? hostname : undefined)),
      refused,
    );
  }
}

/** QEMU's answer to `object-del` of `id` when there is no such object, and only for that id. */
function absentObject(id: string): RegExp {
  return new RegExp(`^object '${id.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}' not found$`);
}

/** One TLS command, abortable like every command of the run; QEMU's refusal of it is TLS_FAILED. */
async function tlsStep(ctx: RunContext, side: Side, fn: (m: QemuMonitor) => Promise<void>): Promise<void> {
  try {
    await ctx.on(side, fn, "setting up TLS");
  } catch (err) {
    if (err instanceof TransportError)
      throw new RunError("TLS_FAILED", `${side.name}: ${err.message}`, { cause: err });
    throw err;
  }
}
