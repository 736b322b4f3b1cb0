import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import path from "node:path";

/**
 * An in-process QMP server for protocol edge cases real QEMU never produces on demand: garbage, hangs,
 * disconnects, floods. Each connection gets a greeting (unless told otherwise) and every command goes to `handle`.
 */
export interface FakeConnection {
  send(obj: unknown): void;
  sendRaw(text: string): void;
  end(): void;
  destroy(): void;
  socket: net.Socket;
}

export type CommandHandler = (
  cmd: { execute: string; arguments?: Record<string, unknown>; id?: unknown },
  conn: FakeConnection,
) => void;

export interface FakeQmpOptions {
  greeting?: boolean | string;
  handle?: CommandHandler;
}

export const GREETING = {
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "fake" }, capabilities: ["oob"] },
};

export class FakeQmpServer {
  readonly path: string;
  readonly connections: FakeConnection[] = [];
  private readonly server: net.Server;
  private readonly dir: string;

  private constructor(options: FakeQmpOptions) {
    this.dir = mkdtempSync("/tmp/bf-fake-");
    this.path = path.join(this.dir, "qmp.sock");
    const handle: CommandHandler =
      options.handle ??
      ((cmd, conn) => {
        conn.send({ return: {}, id: cmd.id });
      });
    this.server = net.createServer((socket) => {
      const conn: FakeConnection = {
        socket,
        send: (obj) => socket.write(`${JSON.stringify(obj)}\r\n`),
        sendRaw: (text) => socket.write(text),
        end: () => socket.end(),
        destroy: () => socket.destroy(),
      };
      this.connections.push(conn);
      socket.on("error", () => undefined);
      if (options.greeting === undefined || options.greeting === true) conn.send(GREETING);
      else if (typeof options.greeting === "string") conn.sendRaw(options.greeting);
      let buf = "";
      socket.on("data", (chunk) => {
        buf += chunk.toString("utf8");
        let nl: number;
        while ((nl = buf.indexOf("\n")) !== -1) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim() === "") continue;
          const cmd = JSON.parse(line) as {
            execute: string;
            arguments?: Record<string, unknown>;
            id?: unknown;
          };
          if (cmd.execute === "qmp_capabilities") conn.send({ return: {}, id: cmd.id });
          else handle(cmd, conn);
        }
      });
    });
  }

  static async start(options: FakeQmpOptions = {}): Promise<FakeQmpServer> {
    const s = new FakeQmpServer(options);
    await new Promise<void>((resolve) => s.server.listen(s.path, resolve));
    return s;
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
    rmSync(this.dir, { recursive: true, force: true });
  }
}
