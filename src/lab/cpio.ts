/**
 * The "newc" cpio format the Linux kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/
 * buffer-format.rst): a 110-byte ASCII header per entry, name and data each padded to 4 bytes, a TRAILER!!! entry.
 * Writing it here means building the guest's initramfs needs neither root (device nodes are only header fields)
 * nor a cpio binary.
 */

export type CpioEntry =
  | { kind: "dir"; path: string; mode?: number }
  | { kind: "file"; path: string; data: Uint8Array; mode?: number }
  | { kind: "symlink"; path: string; target: string }
  | { kind: "char"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

function record(
  ino: number,
  mode: number,
  name: string,
  data: Uint8Array,
  rdev: [number, number] = [0, 0],
): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`, "utf8");
  const fields = [
    ino,
    mode,
    0, // uid: root
    0, // gid
    (mode & S_IFDIR) === S_IFDIR ? 2 : 1,
    0, // mtime: fixed, so the same inputs give the same archive
    data.length,
    0,
    0,
    rdev[0],
    rdev[1],
    nameBytes.length,
    0,
  ];
  const header = Buffer.from(`070701${fields.map(hex8).join("")}`, "ascii");
  return [header, nameBytes, pad4(header.length + nameBytes.length), Buffer.from(data), pad4(data.length)];
}

/** The archive for `entries`, in their order (a directory must come before what it holds). */
export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => {
    const ino = i + 1;
    const name = e.path.replace(/^\/+/, "");
    switch (e.kind) {
      case "dir":
        parts.push(...record(ino, S_IFDIR | (e.mode ?? 0o755), name, new Uint8Array()));
        break;
      case "file":
        parts.push(...record(ino, S_IFREG | (e.mode ?? 0o644), name, e.data));
        break;
      case "symlink":
        parts.push(...record(ino, S_IFLNK | 0o777, name, Buffer.from(e.target, "utf8")));
        break;
      case "char":
        parts.push(...record(ino, S_IFCHR | (e.mode ?? 0o600), name, new Uint8Array(), [e.major, e.minor]));
        break;
    }
  });
  parts.push(...record(0, 0, "TRAILER!!!", new Uint8Array()));
  return Buffer.concat(parts);
}
