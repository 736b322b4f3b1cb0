import net from "node:net";
import type { Duplex } from "node:stream";
import { debug } from "../util/debug.js";
import { parseSocketAddress, formatSocketAddress, type SocketAddress } from "./address.js";
import {
  QmpAbortedError,
  QmpCommandError,
  QmpConnectError,
  QmpConnectionClosedError,
  QmpProtocolError,
  QmpStateError,
  QmpTimeoutError,
  type QmpError,
} from "./errors.js";
import { DEFAULT_MAX_LINE_BYTES, LineDecoder, encodeMessage } from "./framing.js";
import {
  classifyMessage,
  peekEventName,
  type QmpEvent,
  type QmpGreeting,
  type QmpVersion,
} from "./messages.js";

export interface QmpClientOptions {
  /** Name used in logs and error messages, for example "source". */
  label?: string;
  /** Longest accepted line; longer ones are a protocol error. */
  maxLineBytes?: number;
  /** How long to wait for the socket and the greeting. */
  connectTimeoutMs?: number;
  /** Default per-command timeout; 0 waits forever. */
  commandTimeoutMs?: number;
  /** Skip `qmp_capabilities` (for tests of the raw protocol). */
  negotiate?: boolean;
}

export interface ExecuteOptions {
  signal?: AbortSignal;
  /** Overrides the client's default timeout for this command; 0 waits forever. */
  timeoutMs?: number;
}

export interface WaitForEventOptions {
  filter?: (event: QmpEvent) => boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export type EventListener = (event: QmpEvent) => void;

interface Pending {
  command: string;
  args: Record<string, unknown> | undefined;
  resolve: (value: unknown) => void;
  reject: (err: QmpError) => void;
  cleanup: () => void;
}

type State = "negotiating" | "ready" | "closing" | "closed";

/**
 * A QMP client: pipelined commands routed by id, per-command timeouts and abort signals, events delivered to
 * listeners registered before the command that causes them, and typed errors for every way a monitor fails.
 */
export class QmpClient implements AsyncDisposable {
  readonly label: string;
  /** Resolves (never rejects) with the reason once the connection is gone. */
  readonly closed: Promise<QmpConnectionClosedError | QmpProtocolError>;

  private state: State = "negotiating";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Map<string, Set<EventListener>>();
  private readonly anyListeners = new Set<EventListener>();
  private readonly closeWatchers = new Set<(err: QmpConnectionClosedError | QmpProtocolError) => void>();
  private readonly decoder: LineDecoder;
  private failure: QmpConnectionClosedError | QmpProtocolError | undefined;
  private expectClose = false;
  private resolveClosed!: (err: QmpConnectionClosedError | QmpProtocolError) => void;
  private greetingWaiter: ((g: QmpGreeting) => void) | undefined;
  private greetingValue: QmpGreeting | undefined;
  private readonly defaultTimeoutMs: number;
  private corked = false;

  private constructor(
    private readonly stream: Duplex,
    options: QmpClientOptions,
  ) {
    this.label = options.label ?? "qmp";
    this.decoder = new LineDecoder(options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    this.defaultTimeoutMs = options.commandTimeoutMs ?? 0;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    stream.on("data", (chunk: Buffer) => {
      this.onData(chunk);
    });
    stream.on("error", (err: Error) => {
      debug("qmp[%s] socket error: %s", this.label, err.message);
      this.finish(undefined, err);
    });
    stream.on("close", () => {
      this.finish();
    });
    stream.on("end", () => {
      this.finish();
    });
  }

  /**
   * Connects to a monitor (`unix:/path`, a bare path, `tcp:HOST:PORT`, or an open duplex stream such as one end
   * of a socketpair), reads the greeting and negotiates capabilities.
   */
  static async connect(
    target: string | SocketAddress | Duplex,
    options: QmpClientOptions = {},
  ): Promise<QmpClient> {
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    let stream: Duplex;
    let where: string;
    if (typeof target === "string" || (typeof target === "object" && "type" in target)) {
      const address = typeof target === "string" ? parseSocketAddress(target) : target;
      where = formatSocketAddress(address);
      stream = await openSocket(address, where, timeoutMs);
    } else {
      stream = target;
      where = options.label ?? "stream";
    }
    const client = new QmpClient(stream, options);
    try {
      const greeting = await client.waitGreeting(timeoutMs, where);
      debug("qmp[%s] greeting: QEMU %s", client.label, formatVersion(greeting.version));
      if (options.negotiate !== false) {
        await client.execute("qmp_capabilities", undefined, { timeoutMs });
      }
      client.state = "ready";
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  get greeting(): QmpGreeting {
    if (this.greetingValue === undefined) throw new QmpStateError("no greeting received yet");
    return this.greetingValue;
  }

  get version(): QmpVersion {
    return this.greeting.version;
  }

  get isClosed(): boolean {
    return this.state === "closed";
  }

  /** Commands sent and still waiting for their reply. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Runs a command. Rejects with QmpCommandError when QEMU answers with an error, QmpTimeoutError or
   * QmpAbortedError when the caller gives up (a late reply is then dropped), and QmpConnectionClosedError when
   * the monitor goes away first.
   */
  execute(command: string, args?: Record<string, unknown>, options: ExecuteOptions = {}): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.state === "closing" || this.state === "closed") {
      return Promise.reject(new QmpConnectionClosedError(true, [command]));
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(new QmpAbortedError(command, { cause: signal.reason }));
    const id = `bf-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    return new Promise<unknown>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        this.abandon(id, new QmpAbortedError(command, { cause: signal?.reason }));
      };
      const entry: Pending = {
        command,
        args,
        resolve,
        reject,
        cleanup: () => {
          if (timer) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      this.pending.set(id, entry);
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.abandon(id, new QmpTimeoutError(command, timeoutMs));
        }, timeoutMs);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      const message =
        args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      if (debug.enabled) debug("qmp[%s] -> %s", this.label, JSON.stringify(message));
      this.send(encodeMessage(message));
    });
  }

  /** Calls `listener` for every event named `event` ("*" for all). Returns the function that unsubscribes. */
  on(event: string, listener: EventListener): () => void {
    if (event === "*") {
      this.anyListeners.add(listener);
      return () => this.anyListeners.delete(listener);
    }
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(event);
    };
  }

  /**
   * Resolves with the first matching event. It listens from the moment it is called, so call it before the
   * command that causes the event: QEMU may send the event before the command's reply.
   */
  waitForEvent(event: string, options: WaitForEventOptions = {}): Promise<QmpEvent> {
    const { filter, signal, timeoutMs } = options;
    if (this.failure) return Promise.reject(this.failure);
    if (signal?.aborted)
      return Promise.reject(new QmpAbortedError(`wait for ${event}`, { cause: signal.reason }));
    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const settle = (outcome: () => void): void => {
        off();
        offClose();
        if (timer) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        outcome();
      };
      const off = this.on(event, (ev) => {
        if (filter && !filter(ev)) return;
        settle(() => {
          resolve(ev);
        });
      });
      const offClose = this.onClose((err) => {
        settle(() => {
          reject(err);
        });
      });
      const onAbort = (): void => {
        settle(() => {
          reject(new QmpAbortedError(`wait for ${event}`, { cause: signal?.reason }));
        });
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined && timeoutMs > 0) {
        timer = setTimeout(() => {
          settle(() => {
            reject(new QmpTimeoutError(`wait for ${event}`, timeoutMs));
          });
        }, timeoutMs);
      }
    });
  }

  /** Calls `fn` once when the connection ends. Returns the function that unsubscribes. */
  onClose(fn: (err: QmpConnectionClosedError | QmpProtocolError) => void): () => void {
    if (this.failure) {
      const err = this.failure;
      queueMicrotask(() => {
        fn(err);
      });
      return noop;
    }
    this.closeWatchers.add(fn);
    return () => this.closeWatchers.delete(fn);
  }

  /** Asks QEMU to exit and waits until the monitor closes. */
  async quit(timeoutMs = 5_000): Promise<void> {
    if (this.state === "closed") return;
    this.expectClose = true;
    try {
      await this.execute("quit", undefined, { timeoutMs });
    } catch (err) {
      if (!(err instanceof QmpConnectionClosedError)) throw err;
    }
    await Promise.race([this.closed, sleep(timeoutMs)]);
    this.close();
  }

  /**
   * Commands sent in one go (the hashes of every bitmap, a snapshot's queries) leave in one write: one system call
   * and one wake-up of QEMU for all of them, not one each. They are held only until the current callbacks finish.
   */
  private send(line: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(() => {
        this.flush();
      });
    }
    this.stream.write(line);
  }

  private flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.stream.uncork();
  }

  /** Closes the connection; pending commands fail with an expected QmpConnectionClosedError. */
  close(): void {
    if (this.state === "closed") return;
    this.expectClose = true;
    this.state = "closing";
    // What was sent goes out before the socket closes, as it did when each command was written at once.
    this.flush();
    this.stream.destroy();
    this.finish();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }

  private waitGreeting(timeoutMs: number, where: string): Promise<QmpGreeting> {
    if (this.greetingValue) return Promise.resolve(this.greetingValue);
    return new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greetingWaiter = undefined;
        reject(
          new QmpTimeoutError(
            "greeting",
            timeoutMs,
            `${where} accepted the connection but sent no QMP greeting (another client may hold this monitor)`,
          ),
        );
      }, timeoutMs);
      this.greetingWaiter = (g) => {
        clearTimeout(timer);
        resolve(g);
      };
      this.onClose((err) => {
        clearTimeout(timer);
        if (this.greetingWaiter) {
          this.greetingWaiter = undefined;
          reject(err);
        }
      });
    });
  }

  private abandon(id: string, err: QmpError): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    entry.cleanup();
    debug("qmp[%s] abandoned %s (%s): %s", this.label, id, entry.command, err.message);
    entry.reject(err);
  }

  private onData(chunk: Buffer): void {
    let lines: string[];
    try {
      lines = this.decoder.push(chunk);
    } catch (err) {
      this.fail(err as QmpProtocolError);
      return;
    }
    for (const line of lines) {
      if (this.state === "closed") return;
      this.onLine(line);
    }
  }

  private onLine(line: string): void {
    const peeked = peekEventName(line);
    if (
      peeked !== undefined &&
      !debug.enabled &&
      this.anyListeners.size === 0 &&
      !this.listeners.has(peeked)
    ) {
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      this.fail(new QmpProtocolError(`[${this.label}] reply is not JSON`, line));
      return;
    }
    if (debug.enabled)
      debug("qmp[%s] <- %s", this.label, line.length > 2000 ? `${line.slice(0, 2000)}…` : line);
    const msg = classifyMessage(parsed);
    switch (msg.kind) {
      case "event":
        this.dispatch(msg);
        return;
      case "return":
      case "error": {
        if (typeof msg.id !== "string") {
          this.fail(
            new QmpProtocolError(
              `[${this.label}] ${msg.kind === "error" ? `error without a command id (${msg.desc})` : "reply without a command id"}`,
              line,
            ),
          );
          return;
        }
        const entry = this.pending.get(msg.id);
        if (!entry) {
          debug("qmp[%s] dropping late reply for %s", this.label, msg.id);
          return;
        }
        this.pending.delete(msg.id);
        entry.cleanup();
        if (msg.kind === "return") entry.resolve(msg.value);
        else entry.reject(new QmpCommandError(entry.command, entry.args, msg.errorClass, msg.desc));
        return;
      }
      case "greeting":
        if (this.greetingValue) {
          this.fail(new QmpProtocolError(`[${this.label}] second greeting`, line));
          return;
        }
        this.greetingValue = msg;
        this.greetingWaiter?.(msg);
        this.greetingWaiter = undefined;
        return;
      case "unknown":
        this.fail(new QmpProtocolError(`[${this.label}] unexpected message (${msg.reason})`, line));
        return;
    }
  }

  private dispatch(event: QmpEvent): void {
    const set = this.listeners.get(event.event);
    if (set) {
      for (const fn of [...set]) fn(event);
    }
    for (const fn of [...this.anyListeners]) fn(event);
  }

  /** Poisons the connection: every pending and later command fails with `err`. */
  private fail(err: QmpProtocolError): void {
    debug("qmp[%s] protocol error: %s", this.label, err.message);
    this.finish(err);
    this.stream.destroy();
  }

  private finish(protocolError?: QmpProtocolError, cause?: Error): void {
    if (this.state === "closed") return;
    this.state = "closed";
    const pendingNames = [...this.pending.values()].map((p) => p.command);
    const closedError = new QmpConnectionClosedError(
      this.expectClose,
      pendingNames,
      cause ? { cause } : undefined,
    );
    const err = protocolError ?? closedError;
    this.failure = err;
    const entries = [...this.pending.values()];
    this.pending.clear();
    for (const entry of entries) {
      entry.cleanup();
      entry.reject(err);
    }
    debug("qmp[%s] closed: %s", this.label, err.message);
    const watchers = [...this.closeWatchers];
    this.closeWatchers.clear();
    for (const fn of watchers) fn(err);
    this.resolveClosed(err);
  }
}

function noop(): void {
  /* nothing to undo */
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export function formatVersion(v: QmpVersion): string {
  return `${v.major}.${v.minor}.${v.micro}${v.package ? ` (${v.package.trim()})` : ""}`;
}

function openSocket(address: SocketAddress, where: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      address.type === "unix"
        ? net.createConnection({ path: address.path })
        : net.createConnection({ host: address.host, port: address.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new QmpConnectError(where, `no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new QmpConnectError(where, explainSocketError(err, address), { cause: err }));
    });
  });
}

function explainSocketError(err: NodeJS.ErrnoException, address: SocketAddress): string {
  switch (err.code ?? "") {
    case "ENOENT":
      return `no socket at ${address.type === "unix" ? address.path : "that address"} (is QEMU running with -qmp unix:...,server=on?)`;
    case "ECONNREFUSED":
      return "connection refused (QEMU is not listening there, or it has exited)";
    case "EACCES":
      return "permission denied";
    case "ENOTSOCK":
      return "that path exists but is not a socket";
    default:
      return err.message;
  }
}
