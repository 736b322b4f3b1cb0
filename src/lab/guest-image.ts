import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
} from "node:fs";
import { copyFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { cacheDir } from "../util/cache-dir.js";
import { BitferryError } from "../util/errors.js";
import { newcArchive, type CpioEntry } from "./cpio.js";
import { GUEST_INIT, GUEST_MODULES } from "./guest-init.js";

const execFileP = promisify(execFile);

/**
 * The lab's real Linux guest: Debian's cloud kernel (small, virtio as modules) and an initramfs of busybox-static
 * plus the virtio modules and the writing init of guest-init.ts. Built from the two .deb files (apt-get download and
 * dpkg -x: nothing is installed) and cached outside the repository, keyed by kernel version; the initramfs is also
 * keyed by the init script, so changing the script rebuilds only it.
 */
export interface GuestImage {
  /** The kernel's version, for example "6.1.0-57-cloud-amd64". */
  version: string;
  kernel: string;
  initrd: string;
}

/** The kernel meta-package whose dependency names the current cloud kernel. */
export const KERNEL_META_PACKAGE = "linux-image-cloud-amd64";

export class GuestImageError extends BitferryError {
  readonly code = "GUEST_IMAGE";
}

/** Where the last built image is recorded; scripts/first-run.mjs reads it to decide without starting tsx. */
export function currentFile(dir = cacheDir()): string {
  return path.join(dir, "guest", "current.json");
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { cwd, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const why =
      e.code === "ENOENT" ? "not found" : (e.stderr?.trim().split("\n").slice(-2).join(" | ") ?? e.message);
    throw new GuestImageError(`${cmd} ${args.join(" ")}: ${why}`, { cause: err });
  }
}

/** The versioned kernel package the meta-package depends on, as apt sees it now. */
export async function kernelPackage(): Promise<string> {
  const out = await run("apt-cache", ["depends", KERNEL_META_PACKAGE]);
  const m = /Depends:\s*(linux-image-\S+-cloud-amd64)/.exec(out);
  if (!m?.[1])
    throw new GuestImageError(
      `apt knows no ${KERNEL_META_PACKAGE} (run apt-get update; the guest needs Debian's cloud kernel)`,
    );
  return m[1];
}

/** For temporary files: several builds may run at once, in several processes or in one. */
function uniqueSuffix(): string {
  return `${process.pid}.${randomBytes(4).toString("hex")}`;
}

function initrdName(): string {
  const h = createHash("sha256").update(GUEST_INIT).update(GUEST_MODULES.join(",")).digest("hex");
  return `initrd-${h.slice(0, 12)}.gz`;
}

function readCurrent(dir: string): GuestImage | undefined {
  try {
    const c = JSON.parse(readFileSync(currentFile(dir), "utf8")) as GuestImage;
    return existsSync(c.kernel) ? c : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The guest image, built first if the cache lacks it. `log` gets one line for each thing fetched or built. Without
 * apt (or offline), a previously built image is used as it is.
 */
export async function ensureGuestImage(
  options: { dir?: string; log?: (line: string) => void } = {},
): Promise<GuestImage> {
  const dir = options.dir ?? cacheDir();
  const log = options.log ?? ((): void => undefined);
  let pkg: string;
  try {
    pkg = await kernelPackage();
  } catch (err) {
    const cached = readCurrent(dir);
    if (cached && existsSync(path.join(path.dirname(cached.kernel), initrdName()))) {
      return { ...cached, initrd: path.join(path.dirname(cached.kernel), initrdName()) };
    }
    throw err;
  }
  const version = pkg.replace(/^linux-image-/, "");
  const home = path.join(dir, "guest", version);
  const kernel = path.join(home, "vmlinuz");
  const busybox = path.join(home, "busybox");
  const modules = GUEST_MODULES.map((m) => path.join(home, "modules", `${m}.ko`));
  if (![kernel, busybox, ...modules].every((f) => existsSync(f))) {
    log(`guest kernel: downloading ${pkg} and busybox-static (apt-get download, unpacked into ${home})`);
    await unpackPackages(pkg, version, home);
  }
  const initrd = path.join(home, initrdName());
  if (!existsSync(initrd)) {
    log(`guest initramfs: writing ${initrd}`);
    await writeInitrd(initrd, busybox, modules);
  }
  const image: GuestImage = { version, kernel, initrd };
  const tmp = `${currentFile(dir)}.${uniqueSuffix()}`;
  await writeFile(tmp, `${JSON.stringify(image, null, 2)}\n`);
  renameSync(tmp, currentFile(dir));
  return image;
}

async function unpackPackages(pkg: string, version: string, home: string): Promise<void> {
  const suffix = uniqueSuffix();
  const work = mkdtempSync(path.join("/tmp", "bf-guest-"));
  try {
    // apt downloads as user _apt when it runs as root; the directory must be writable by it.
    if (process.getuid?.() === 0) {
      try {
        const uid = Number((await run("id", ["-u", "_apt"])).trim());
        if (Number.isInteger(uid)) chownSync(work, uid, 0);
      } catch {
        // No _apt user: apt downloads as root.
      }
    }
    await run("apt-get", ["download", "-qq", pkg, "busybox-static"], work);
    const root = path.join(work, "root");
    mkdirSync(root);
    for (const deb of readdirSync(work).filter((f) => f.endsWith(".deb")))
      await run("dpkg", ["-x", path.join(work, deb), root]);
    const stage = `${home}.new.${suffix}`;
    mkdirSync(path.join(stage, "modules"), { recursive: true });
    await copyFile(path.join(root, "boot", `vmlinuz-${version}`), path.join(stage, "vmlinuz"));
    await copyFile(path.join(root, "bin", "busybox"), path.join(stage, "busybox"));
    const kdir = path.join(root, "lib", "modules", version, "kernel", "drivers");
    for (const m of GUEST_MODULES) {
      const sub = m === "virtio_blk" ? "block" : "virtio";
      const src = path.join(kdir, sub, `${m}.ko`);
      if (!existsSync(src))
        throw new GuestImageError(`${pkg} has no ${sub}/${m}.ko (compressed modules are not supported)`);
      await copyFile(src, path.join(stage, "modules", `${m}.ko`));
    }
    await rm(home, { recursive: true, force: true });
    mkdirSync(path.dirname(home), { recursive: true });
    try {
      renameSync(stage, home);
    } catch (err) {
      // Another process built the same version at the same time: its copy is as good as ours.
      if (!existsSync(path.join(home, "vmlinuz"))) throw err;
    }
  } finally {
    await rm(`${home}.new.${suffix}`, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }
}

async function writeInitrd(initrd: string, busybox: string, modules: string[]): Promise<void> {
  const entries: CpioEntry[] = [
    ...["bin", "dev", "proc", "sys", "lib", "lib/modules"].map((p): CpioEntry => ({ kind: "dir", path: p })),
    // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    { kind: "char", path: "dev/console", major: 5, minor: 1 },
    { kind: "file", path: "bin/busybox", data: readFileSync(busybox), mode: 0o755 },
    { kind: "symlink", path: "bin/sh", target: "busybox" },
    { kind: "file", path: "init", data: Buffer.from(GUEST_INIT), mode: 0o755 },
    ...modules.map((m): CpioEntry => ({
      kind: "file",
      path: `lib/modules/${path.basename(m)}`,
      data: readFileSync(m),
    })),
  ];
  const tmp = `${initrd}.${uniqueSuffix()}`;
  await writeFile(tmp, gzipSync(newcArchive(entries)));
  renameSync(tmp, initrd);
}
