import { renderTable } from "../render/table.js";
import { formatBytes } from "../../util/format.js";
import {
  inspectErrorDocument,
  inspectImage,
  type InspectBitmap,
  type InspectDocument,
  type InspectExtent,
} from "../../qcow2/inspect.js";
import { ExitCode } from "../exit-codes.js";
import { exitOnSignal } from "../interrupt.js";
import { colors, exitCodeFor, reportError, writeJson, type CliIO } from "../output.js";

export interface InspectFlags {
  bitmap?: string;
  extents?: boolean;
  sha256?: boolean;
  json?: boolean;
}

/** The `inspect` command's work, loaded only when the command runs. */
export async function runInspect(io: CliIO, image: string, flags: InspectFlags): Promise<number> {
  let doc: InspectDocument;
  const stopSignals = exitOnSignal(io, flags.json === true, `reading ${image}`);
  try {
    doc = await inspectImage(image, {
      ...(flags.bitmap !== undefined ? { bitmap: flags.bitmap } : {}),
      extents: flags.extents === true,
      sha256: flags.sha256 === true,
    });
  } catch (err) {
    if (flags.json) writeJson(io, inspectErrorDocument(err));
    reportError(io, err);
    return exitCodeFor(err);
  } finally {
    stopSignals();
  }
  if (flags.json) writeJson(io, doc);
  else renderHuman(io, doc, flags);
  return ExitCode.OK;
}

function renderHuman(io: CliIO, doc: InspectDocument, flags: InspectFlags): void {
  const c = colors(io);
  const { image } = doc;
  const out: string[] = [];
  out.push(
    `${c.bold("image")} ${printable(image.path)}  qcow2 v${image.qcowVersion}  ` +
      `virtual size ${formatBytes(image.virtualSize)} (${image.virtualSize} bytes)  ` +
      `cluster size ${formatBytes(image.clusterSize)}`,
  );
  if (doc.bitmaps.length === 0) {
    out.push("no persistent bitmaps");
  } else {
    const head = ["name", "granularity", "flags", "dirty bytes"];
    if (flags.sha256) head.push("sha256");
    if (flags.extents) head.push("extents");
    const rows = doc.bitmaps.map((b) => {
      const row = [
        printable(b.name),
        formatBytes(b.granularity),
        flagText(b),
        b.inUse
          ? "stale (in use)"
          : `${b.dirtyBytes}${b.dirtyBytes >= 1024 ? ` (${formatBytes(b.dirtyBytes)})` : ""}`,
      ];
      if (flags.sha256) row.push(b.inUse ? "stale (in use)" : (b.sha256 ?? ""));
      if (flags.extents) row.push(b.inUse ? "stale (in use)" : String(b.extents?.length ?? 0));
      return row;
    });
    out.push(
      renderTable(
        head.map((h) => c.bold(h)),
        rows,
        { wordWrap: false },
      ),
    );
    if (flags.extents) {
      for (const b of doc.bitmaps) {
        if (b.inUse || b.extents === undefined || b.extents.length === 0) continue;
        out.push("", `dirty extents of ${printable(b.name)} (start, end, length in bytes):`);
        out.push(...extentLines(b.extents));
      }
    }
  }
  io.stdout.write(`${out.join("\n")}\n`);
  for (const w of doc.warnings) io.stderr.write(`${c.yellow("warning:")} ${w.message} [${w.code}]\n`);
}

function flagText(b: InspectBitmap): string {
  const f: string[] = [];
  if (b.inUse) f.push("in-use");
  if (b.auto) f.push("auto");
  return f.length > 0 ? f.join(",") : "-";
}

function extentLines(extents: readonly InspectExtent[]): string[] {
  const last = extents[extents.length - 1];
  const width = last === undefined ? 1 : String(last.start + last.length).length;
  return extents.map(
    (e) =>
      `  ${String(e.start).padStart(width)}  ${String(e.start + e.length).padStart(width)}  ` +
      `${e.length}${e.length >= 1024 ? ` (${formatBytes(e.length)})` : ""}`,
  );
}

/** Names come from the image: control characters are shown escaped, never sent to the terminal. */
function printable(s: string): string {
  return s.replace(
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f-\u009f]/g,
    (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}
