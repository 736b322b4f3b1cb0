import { execFileSync } from "node:child_process";
import { BitferryError } from "../util/errors.js";

/**
 * One QEMU installation: the binaries and the environment its processes need. Two builds can live side by side
 * (for example Debian's 7.2 and a 10.0 unpacked into a private prefix); each process gets its own environment,
 * never an exported one, because a QEMU that loads another version's modules aborts.
 */
export interface QemuBuild {
  /** Short name for logs and test titles, for example "7.2". */
  label: string;
  systemBinary: string;
  imgBinary: string;
  /** Extra environment for this build's processes only (for example QEMU_MODULE_DIR). */
  env: Record<string, string>;
  /** Arguments every process of this build gets (for example `-L` data directories). */
  extraArgs: string[];
}

export class QemuNotFoundError extends BitferryError {
  readonly code = "QEMU_NOT_FOUND";
  constructor(binary: string) {
    super(
      `${binary} not found. Install QEMU first: on Debian or Ubuntu 'sudo apt-get install qemu-system-x86 qemu-utils', ` +
        `on Fedora 'sudo dnf install qemu-system-x86-core qemu-img'.`,
    );
  }
}

/** The QEMU on PATH (or named by BITFERRY_QEMU / BITFERRY_QEMU_IMG). */
export function systemBuild(): QemuBuild {
  const systemBinary = process.env.BITFERRY_QEMU ?? "qemu-system-x86_64";
  const imgBinary = process.env.BITFERRY_QEMU_IMG ?? "qemu-img";
  return { label: versionLabel(systemBinary) ?? "system", systemBinary, imgBinary, env: {}, extraArgs: [] };
}

/** "7.2" from `qemu-system-x86_64 --version`, or undefined when the binary is missing. */
export function versionLabel(binary: string, env: Record<string, string> = {}): string | undefined {
  try {
    const out = execFileSync(binary, ["--version"], { encoding: "utf8", env: { ...process.env, ...env } });
    const m = /version (\d+)\.(\d+)/.exec(out);
    return m ? `${m[1]}.${m[2]}` : undefined;
  } catch {
    return undefined;
  }
}
