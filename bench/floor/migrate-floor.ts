/**
 * The floor for `bitferry migrate`: a bare script that does what any tool carrying bitmaps with proof has to do,
 * and nothing else: the capabilities and the mapping on both sides, `migrate-incoming`, `migrate`, the wait for
 * `completed` on both, then the SHA-256 of every bitmap on both sides (all pipelined, both monitors at once). No
 * plan, no checks, no switchover pause, no restore. It imports only node:net so that its start-up is Node's own.
 *
 *   node migrate-floor.js SOURCE.sock DEST.sock URI MAPPING.json
 *
 * MAPPING.json is the block-bitmap-mapping (the same on both sides). Prints one line: the hashes of each side.
 */
import net from "node:net";
import { readFileSync } from "node:fs";

interface Reply {
  QMP?: unknown;
  return?: unknown;
  error?: unknown;
  id?: number;
  event?: string;
  data?: { status?: string };
}

/** One monitor: commands by id, and a wait for the MIGRATION event that ends it. */
class Monitor {
  private readonly sock: net.Socket;
  private buf = "";
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private ready: Promise<void>;
  private ended: Promise<string>;
  private onEnd: (status: string) => void = () => undefined;

  constructor(path: string) {
    this.sock = net.createConnection({ path });
    this.sock.setEncoding("utf8");
    this.ended = new Promise((resolve) => (this.onEnd = resolve));
    this.ready = new Promise((resolve, reject) => {
      this.sock.on("error", reject);
      this.sock.on("data", (chunk: string) => {
        this.buf += chunk;
        let nl: number;
        while ((nl = this.buf.indexOf("\n")) !== -1) {
          const msg = JSON.parse(this.buf.slice(0, nl)) as Reply;
          this.buf = this.buf.slice(nl + 1);
          if (msg.QMP !== undefined) {
            this.sock.write(`${JSON.stringify({ execute: "qmp_capabilities", id: -1 })}\n`);
          } else if (msg.id === -1) {
            resolve();
          } else if (msg.event === "MIGRATION") {
            const s = msg.data?.status;
            if (s === "completed" || s === "failed") this.onEnd(s);
          } else if (msg.id !== undefined) {
            const w = this.waiting.get(msg.id);
            this.waiting.delete(msg.id);
            if (msg.error !== undefined) w?.reject(new Error(JSON.stringify(msg.error)));
            else w?.resolve(msg.return);
          }
        }
      });
    });
  }

  async open(): Promise<this> {
    await this.ready;
    return this;
  }

  /** Sends every command at once; resolves with their replies in order. */
  send(commands: { execute: string; arguments?: unknown }[]): Promise<unknown[]> {
    const replies = commands.map((c) => {
      const id = this.next++;
      return { id, line: `${JSON.stringify({ ...c, id })}\n` };
    });
    const out = Promise.all(
      replies.map(
        ({ id }) => new Promise<unknown>((resolve, reject) => this.waiting.set(id, { resolve, reject })),
      ),
    );
    this.sock.write(replies.map((r) => r.line).join(""));
    return out;
  }

  completed(): Promise<string> {
    return this.ended;
  }

  close(): void {
    this.sock.end();
  }
}

const [srcPath, dstPath, uri, mappingFile] = process.argv.slice(2);
if (srcPath === undefined || dstPath === undefined || uri === undefined || mappingFile === undefined)
  throw new Error("usage: migrate-floor SOURCE.sock DEST.sock URI MAPPING.json");
const mapping = JSON.parse(readFileSync(mappingFile, "utf8")) as {
  "node-name": string;
  bitmaps: { name: string }[];
}[];
const [src, dst] = await Promise.all([new Monitor(srcPath).open(), new Monitor(dstPath).open()]);
const setup = (m: Monitor): Promise<unknown[]> =>
  m.send([
    {
      execute: "migrate-set-capabilities",
      arguments: {
        capabilities: [
          { capability: "dirty-bitmaps", state: true },
          { capability: "events", state: true },
        ],
      },
    },
    { execute: "migrate-set-parameters", arguments: { "block-bitmap-mapping": mapping } },
  ]);
await Promise.all([setup(src), setup(dst)]);
await dst.send([{ execute: "migrate-incoming", arguments: { uri } }]);
await src.send([{ execute: "migrate", arguments: { uri } }]);
const [a, b] = await Promise.all([src.completed(), dst.completed()]);
if (a !== "completed" || b !== "completed") throw new Error(`migration ended ${a} / ${b}`);
const hashes = (m: Monitor): Promise<unknown[]> =>
  m.send(
    mapping.flatMap((n) =>
      n.bitmaps.map((bm) => ({
        execute: "x-debug-block-dirty-bitmap-sha256",
        arguments: { node: n["node-name"], name: bm.name },
      })),
    ),
  );
const [hs, hd] = await Promise.all([hashes(src), hashes(dst)]);
src.close();
dst.close();
process.stdout.write(`${JSON.stringify({ source: hs, destination: hd })}\n`);
