import { existsSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { systemBuild, versionLabel, type QemuBuild } from "./build.js";

/** Where `.ci/install-qemu-10.sh` unpacks Debian's QEMU 10.0 unless told otherwise. */
export const DEFAULT_QEMU10_PREFIX = "/opt/bitferry-qemu-10.0";

/** What to tell a user whose machine lacks the 10.0 build. */
export const QEMU10_MISSING_HINT = "QEMU 10.0 not installed: run .ci/install-qemu-10.sh";

/** The I/O discovery needs, injectable so the selection logic is testable without QEMU. */
export interface DiscoveryOptions {
  env?: NodeJS.ProcessEnv;
  exists?: (file: string) => boolean;
  /** "10.0" from the binary's `--version` run with `env`, or undefined when it does not run. */
  version?: (binary: string, env: Record<string, string>) => string | undefined;
  /** The QEMU on PATH; only called when no explicit list is given. */
  system?: () => QemuBuild;
}

/**
 * The QEMU builds the lab can use. `BITFERRY_QEMU_BUILDS` (a JSON list) replaces discovery entirely; otherwise
 * the system build plus the 10.0 prefix (`BITFERRY_QEMU10_PREFIX`, default /opt/bitferry-qemu-10.0) when its
 * binary exists. A prefix whose binary exists but does not run is an error, not a silent omission.
 */
export function discoverBuilds(options: DiscoveryOptions = {}): QemuBuild[] {
  const env = options.env ?? process.env;
  const exists = options.exists ?? existsSync;
  const version = options.version ?? versionLabel;
  const explicit = env.BITFERRY_QEMU_BUILDS;
  if (explicit !== undefined && explicit.trim() !== "") {
    return uniqueLabels(
      parseBuildList(explicit).map((b, i) => ({
        ...b,
        label: b.label ?? version(b.systemBinary, b.env) ?? `build${i + 1}`,
      })),
    );
  }
  const builds = [(options.system ?? systemBuild)()];
  const prefix = env.BITFERRY_QEMU10_PREFIX ?? DEFAULT_QEMU10_PREFIX;
  const unlabelled = prefixBuild(prefix);
  if (exists(unlabelled.systemBinary)) {
    const label = version(unlabelled.systemBinary, unlabelled.env);
    if (label === undefined) {
      throw new Error(
        `${unlabelled.systemBinary} exists but '--version' fails; reinstall with .ci/install-qemu-10.sh --force`,
      );
    }
    builds.push({ ...unlabelled, label });
  }
  return uniqueLabels(builds);
}

/**
 * A Debian QEMU unpacked with `dpkg -x` into `prefix`. Its binaries look for modules and data under /usr, where
 * the system QEMU's live: modules of another build abort QEMU ("Only modules from the same build can be loaded"),
 * and with a versioned machine type it would load the system's older SeaBIOS and option ROMs.
 */
export function prefixBuild(prefix: string, label = path.basename(prefix)): QemuBuild {
  const usr = path.join(prefix, "usr");
  return {
    label,
    systemBinary: path.join(usr, "bin", "qemu-system-x86_64"),
    imgBinary: path.join(usr, "bin", "qemu-img"),
    // qemu-img needs it too: its block drivers (curl, nfs, ssh, ...) are modules.
    env: { QEMU_MODULE_DIR: path.join(usr, "lib", "x86_64-linux-gnu", "qemu") },
    extraArgs: ["-L", path.join(usr, "share", "qemu"), "-L", path.join(usr, "share", "seabios")],
  };
}

const BuildEntry = z.object({
  label: z.string().min(1).optional(),
  systemBinary: z.string().min(1),
  imgBinary: z.string().min(1),
  env: z.record(z.string(), z.string()).default({}),
  extraArgs: z.array(z.string()).default([]),
});
type BuildEntry = z.infer<typeof BuildEntry>;

/** Parses `BITFERRY_QEMU_BUILDS`: `[{label?, systemBinary, imgBinary, env?, extraArgs?}]`, at least one. */
export function parseBuildList(json: string): BuildEntry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new Error(`BITFERRY_QEMU_BUILDS is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = z.array(BuildEntry).min(1).safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `BITFERRY_QEMU_BUILDS: ${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "invalid"}`,
    );
  }
  return parsed.data;
}

/** Two builds of one version (say two 7.2s) would otherwise share test titles and lab labels. */
function uniqueLabels(builds: QemuBuild[]): QemuBuild[] {
  const seen = new Map<string, number>();
  return builds.map((b) => {
    const n = (seen.get(b.label) ?? 0) + 1;
    seen.set(b.label, n);
    return n === 1 ? b : { ...b, label: `${b.label}#${n}` };
  });
}

export interface BuildPair {
  source: QemuBuild;
  destination: QemuBuild;
}

/** Every build to itself first, then every cross pair in both directions, in the order the builds came. */
export function buildPairs(builds: readonly QemuBuild[]): BuildPair[] {
  const same = builds.map((b) => ({ source: b, destination: b }));
  const cross: BuildPair[] = [];
  builds.forEach((a, i) => {
    for (const b of builds.slice(i + 1))
      cross.push({ source: a, destination: b }, { source: b, destination: a });
  });
  return [...same, ...cross];
}

/** [major, minor] of a label such as "10.0" or "7.2#2"; undefined for labels that are not versions. */
export function labelVersion(label: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(label);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}
