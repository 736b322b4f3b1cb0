/** Classification of parsed QMP messages. Pure, hand-written guards: events can arrive 60,000 times a second. */

export interface QmpVersion {
  major: number;
  minor: number;
  micro: number;
  package: string;
}

export interface QmpGreeting {
  kind: "greeting";
  version: QmpVersion;
  capabilities: string[];
}

export interface QmpReturn {
  kind: "return";
  id: unknown;
  value: unknown;
}

export interface QmpErrorReply {
  kind: "error";
  id: unknown;
  errorClass: string;
  desc: string;
}

export interface QmpEvent {
  kind: "event";
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpUnknown {
  kind: "unknown";
  reason: string;
}

export type QmpMessage = QmpGreeting | QmpReturn | QmpErrorReply | QmpEvent | QmpUnknown;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function classifyMessage(msg: unknown): QmpMessage {
  if (!isRecord(msg)) return { kind: "unknown", reason: "message is not a JSON object" };
  if ("return" in msg) return { kind: "return", id: msg.id, value: msg.return };
  if ("error" in msg) {
    const e = msg.error;
    if (!isRecord(e)) return { kind: "unknown", reason: "error member is not an object" };
    return {
      kind: "error",
      id: msg.id,
      errorClass: typeof e.class === "string" ? e.class : "GenericError",
      desc: typeof e.desc === "string" ? e.desc : JSON.stringify(e),
    };
  }
  if (typeof msg.event === "string") {
    const ts = isRecord(msg.timestamp) ? msg.timestamp : {};
    return {
      kind: "event",
      event: msg.event,
      data: isRecord(msg.data) ? msg.data : {},
      timestamp: {
        seconds: typeof ts.seconds === "number" ? ts.seconds : 0,
        microseconds: typeof ts.microseconds === "number" ? ts.microseconds : 0,
      },
    };
  }
  if (isRecord(msg.QMP)) {
    const qmp = msg.QMP;
    const v = isRecord(qmp.version) ? qmp.version : {};
    const q = isRecord(v.qemu) ? v.qemu : {};
    const num = (x: unknown): number => (typeof x === "number" && Number.isInteger(x) ? x : -1);
    const version: QmpVersion = {
      major: num(q.major),
      minor: num(q.minor),
      micro: num(q.micro),
      package: typeof v.package === "string" ? v.package : "",
    };
    if (version.major < 0 || version.minor < 0 || version.micro < 0) {
      return { kind: "unknown", reason: "greeting without a QEMU version" };
    }
    const caps = Array.isArray(qmp.capabilities)
      ? qmp.capabilities.filter((c): c is string => typeof c === "string")
      : [];
    return { kind: "greeting", version, capabilities: caps };
  }
  return { kind: "unknown", reason: "neither return, error, event nor greeting" };
}

/**
 * Reads an event's name from the raw line without parsing it, so events nobody listens to cost almost nothing.
 * QEMU prints `{"timestamp": {...}, "event": "NAME", ...}`; anything else returns undefined and is parsed fully.
 */
export function peekEventName(line: string): string | undefined {
  if (!line.startsWith('{"timestamp"')) return undefined;
  const at = line.indexOf('"event": "', 12);
  if (at === -1 || at > 96) return undefined;
  const start = at + 10;
  const end = line.indexOf('"', start);
  if (end === -1) return undefined;
  return line.slice(start, end);
}
