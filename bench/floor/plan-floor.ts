/**
 * The floor for `bitferry plan`: a bare script that sends the same QMP queries bitferry's plan sends to both
 * monitors and JSON-parses every reply, and nothing else (no validation, no graph, no plan, no output). It
 * imports only node:net so that its start-up is Node's own.
 *
 *   node plan-floor.js SOURCE.sock DEST.sock
 *
 * Prints one line: how many replies and bytes it read from each side.
 */
import net from "node:net";

// In bitferry's order. bitferry asks query-commands for its feature cache, and the schema only for a QEMU build
// the cache does not know yet: what it asks on every later plan is what the floor asks.
const QUERIES: { execute: string; arguments?: Record<string, unknown> }[] = [
  { execute: "query-commands" },
  { execute: "query-version" },
  { execute: "query-status" },
  { execute: "query-named-block-nodes", arguments: { flat: true } },
  { execute: "query-block" },
  { execute: "x-debug-query-block-graph" },
  { execute: "query-migrate-parameters" },
  { execute: "query-migrate-capabilities" },
  { execute: "query-memory-size-summary" },
];

function query(path: string): Promise<{ replies: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path });
    let buf = "";
    // Where the search for the next line end resumes: a 2 MB reply arrives in many chunks.
    let scanned = 0;
    let bytes = 0;
    let replies = 0;
    let negotiated = false;
    sock.setEncoding("utf8");
    sock.on("error", reject);
    sock.on("data", (chunk: string) => {
      bytes += chunk.length;
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf("\n", scanned)) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        scanned = 0;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: unknown; id?: number };
        if (msg.QMP !== undefined) {
          sock.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
        } else if (!negotiated && msg.return !== undefined) {
          negotiated = true;
          // Pipelined, as bitferry's QMP client does: every query in flight at once.
          sock.write(QUERIES.map((q, id) => `${JSON.stringify({ ...q, id })}\n`).join(""));
        } else if (msg.id !== undefined) {
          if (msg.error !== undefined)
            reject(new Error(`${QUERIES[msg.id]?.execute ?? "?"}: ${JSON.stringify(msg.error)}`));
          if (++replies === QUERIES.length) {
            sock.end();
            resolve({ replies, bytes });
          }
        }
      }
      scanned = buf.length;
    });
  });
}

const [src, dst] = process.argv.slice(2);
if (src === undefined || dst === undefined) throw new Error("usage: plan-floor SOURCE.sock DEST.sock");
const [a, b] = await Promise.all([query(src), query(dst)]);
process.stdout.write(`${JSON.stringify({ source: a, destination: b })}\n`);
