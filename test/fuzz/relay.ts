import net from "node:net";

/**
 * An in-process TCP relay for the migration stream: the source connects to the relay, the relay to the
 * destination. `cut()` drops every connection at once, as a broken network would, mid-stream.
 */
export class Relay {
  readonly sockets = new Set<net.Socket>();
  bytes = 0;
  private cutDone = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(upstreamPort: number): Promise<Relay> {
    const holder: { relay?: Relay } = {};
    const server = net.createServer((client) => {
      const r = holder.relay;
      if (!r || r.cutDone) {
        client.destroy();
        return;
      }
      const upstream = net.connect({ host: "127.0.0.1", port: upstreamPort });
      for (const s of [client, upstream]) {
        r.sockets.add(s);
        s.on("error", () => undefined);
        s.on("close", () => r.sockets.delete(s));
      }
      client.on("data", (c: Buffer) => {
        r.bytes += c.length;
      });
      client.pipe(upstream);
      upstream.pipe(client);
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const a = server.address();
        resolve(typeof a === "object" && a ? a.port : 0);
      });
    });
    const relay = new Relay(server, port);
    holder.relay = relay;
    return relay;
  }

  /** Drops every connection (no FIN: a reset, as a dead link looks to the peers) and refuses new ones. */
  cut(): void {
    this.cutDone = true;
    for (const s of this.sockets) s.resetAndDestroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }
}

/** A TCP port nobody listens on right now (the kernel's pick), for QEMU's incoming side. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const a = s.address();
  const port = typeof a === "object" && a ? a.port : 0;
  await new Promise<void>((resolve) => {
    s.close(() => {
      resolve();
    });
  });
  return port;
}
