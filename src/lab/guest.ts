import { existsSync, readFileSync } from "node:fs";
import { GUEST_DISKS_PARAM, GUEST_READY } from "./guest-init.js";
import type { GuestImage } from "./guest-image.js";
import type { QemuProcess } from "./process.js";

/**
 * Running the lab guest: the QEMU arguments that boot it on any topology, and what its serial port says.
 *
 * TCG only: KVM in nested sandboxes aborts (`-cpu host`, MSR 0x10a) or hangs (`-cpu kvm64`) here, and a guest
 * this small boots in seconds under TCG. The machine type is versioned so that a newer QEMU accepts an older one's
 * migration stream (and back, for the cross-version pairs).
 */
export const GUEST_MACHINE = "pc-i440fx-7.2";
export const GUEST_RAM_MIB = 128;

export interface GuestArgsOptions {
  /** File the guest's serial port writes to. */
  serial: string;
  /** Drive or node names to attach, in order: the first is vda, the second vdb, ... */
  disks: readonly string[];
}

/** Machine, kernel and devices: the same on the source and the destination (migration needs equal devices). */
export function guestArgs(image: GuestImage, o: GuestArgsOptions): string[] {
  return [
    "-machine",
    GUEST_MACHINE,
    "-accel",
    "tcg",
    "-m",
    String(GUEST_RAM_MIB),
    "-kernel",
    image.kernel,
    "-initrd",
    image.initrd,
    "-append",
    // no_timer_check: on a loaded host TCG is too slow for the kernel's IO-APIC timer check, which then panics
    // ("IO-APIC + timer doesn't work!"); seen with several guests booting at once.
    `console=ttyS0 quiet panic=-1 no_timer_check ${GUEST_DISKS_PARAM}=${o.disks.length}`,
    "-no-reboot",
    "-serial",
    `file:${o.serial}`,
    // Fixed PCI slots: the guest names virtio disks in bus order, so vda is always the first disk given.
    ...o.disks.flatMap((d, i) => [
      "-device",
      `virtio-blk-pci,drive=${d},id=vd${i},addr=0x${(0x10 + i).toString(16)}`,
    ]),
  ];
}

export interface GuestWrite {
  round: number;
  disk: string;
  offset: number;
}

export interface GuestSerial {
  ready: boolean;
  /** Last round the guest reported a write of (0 before the first). */
  round: number;
  writes: GuestWrite[];
}

const WRITE = /^round (\d+) disk (vd[a-z]+) offset (\d+)$/;

/** Parses what the guest printed; a last line still being written is ignored. */
export function parseGuestSerial(text: string): GuestSerial {
  const lines = text.split("\n");
  if (!text.endsWith("\n")) lines.pop();
  const writes: GuestWrite[] = [];
  let ready = false;
  for (const line of lines) {
    if (line.startsWith(GUEST_READY)) ready = true;
    const m = WRITE.exec(line.trim());
    if (m) writes.push({ round: Number(m[1]), disk: String(m[2]), offset: Number(m[3]) });
  }
  return { ready, round: writes.at(-1)?.round ?? 0, writes };
}

export function readGuestSerial(file: string): GuestSerial {
  return parseGuestSerial(existsSync(file) ? readFileSync(file, "utf8") : "");
}

/** Distinct blocks (offsets) the guest reported writing to `disk`, over one or more serial logs. */
export function writtenBlocks(logs: readonly GuestSerial[], disk: string): Set<number> {
  const s = new Set<number>();
  for (const l of logs) for (const w of l.writes) if (w.disk === disk) s.add(w.offset);
  return s;
}

/** Thrown when the guest does not get as far as expected in time. */
export class GuestTimeoutError extends Error {
  readonly code = "GUEST_TIMEOUT";
}

/**
 * Waits until the guest's serial log satisfies `pred`. Fails early if `proc` exits (a kernel panic ends QEMU,
 * since the guest runs with `panic=-1 -no-reboot`).
 */
export async function waitForGuest(
  serial: string,
  pred: (s: GuestSerial) => boolean,
  options: { proc?: QemuProcess; timeoutMs?: number; what?: string } = {},
): Promise<GuestSerial> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const what = options.what ?? "the expected output";
  // What the guest said last (a kernel panic, an init error) is what explains a failure.
  const tail = (): string => {
    const text = existsSync(serial) ? readFileSync(serial, "utf8").trim() : "";
    return text === "" ? "(serial log empty)" : text.split("\n").slice(-3).join(" | ");
  };
  for (;;) {
    const s = readGuestSerial(serial);
    if (pred(s)) return s;
    if (options.proc && !options.proc.alive) {
      const status = options.proc.exitInfo;
      throw new GuestTimeoutError(
        `the guest's QEMU (${options.proc.label}) exited (${status?.signal ?? `status ${status?.code ?? "?"}`}) ` +
          `before ${what}; serial: ${tail()}; stderr: ${options.proc.stderr.trim().split("\n").slice(-2).join(" | ")}`,
      );
    }
    if (Date.now() > deadline)
      throw new GuestTimeoutError(
        `the guest did not reach ${what} in time (round ${s.round}, ready ${s.ready}); serial: ${tail()}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}
