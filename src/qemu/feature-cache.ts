import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { QmpVersion } from "../qmp/messages.js";
import { cacheDir } from "../util/cache-dir.js";
import { debug } from "../util/debug.js";
import type { QemuFeatures } from "./monitor.js";

/**
 * The features of each QEMU build, remembered across runs, as libvirt keeps its capabilities per QEMU binary.
 * `query-qmp-schema` is QEMU's largest reply (about 200 KB, some 30 ms of QEMU's CPU per monitor), which makes it
 * most of the planning of a small migration; the features bitferry reads from it change only with QEMU's source.
 *
 * Over QMP a build is known by its version and package string (a distribution's release, or `git describe` for a
 * build from a git tree) and by its exact list of commands (which changes with configure options). An entry holds
 * that key in full and the features derived from the schema, nothing of the schema itself. A build that answers
 * differently under the same key would have to change QEMU's QAPI source without changing its version:
 * `BITFERRY_FEATURE_CACHE=off` is for that.
 */

/** Bumped when the meaning of an entry changes; older entries are then simply not found. */
const FORMAT = "v1";

/** Every feature an entry must hold: a feature added to QemuFeatures and not here fails to compile. */
const EVERY_FEATURE: Record<keyof QemuFeatures, true> = {
  bitmapMapping: true,
  mappingTransform: true,
  bitmapSha256: true,
  blockGraph: true,
  incomingExitOnError: true,
};
const FEATURE_KEYS = Object.keys(EVERY_FEATURE) as (keyof QemuFeatures)[];

/** `BITFERRY_FEATURE_CACHE`: a directory, or `off`; default `qemu-features` under bitferry's cache directory. */
export function featureCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env.BITFERRY_FEATURE_CACHE;
  if (v === "off") return undefined;
  return v !== undefined && v !== "" ? v : path.join(cacheDir(env), "qemu-features");
}

/** What identifies a build: its file name and the exact text its entry must hold. */
export interface FeatureKey {
  file: string;
  text: string;
}

/** The key of a build, from its greeting's version and its `query-commands` reply; undefined for an odd reply. */
export function featureKey(version: QmpVersion, commands: unknown): FeatureKey | undefined {
  if (!Array.isArray(commands)) return undefined;
  const names: string[] = [];
  for (const c of commands) {
    const name = typeof c === "object" && c !== null ? (c as { name?: unknown }).name : undefined;
    if (typeof name !== "string") return undefined;
    names.push(name);
  }
  names.sort();
  const text = JSON.stringify([FORMAT, version, names]);
  return { file: `${version.major}.${version.minor}.${version.micro}-${fnv1a(text)}.json`, text };
}

/**
 * 32-bit FNV-1a: a file name, not a proof (the entry holds the whole key and is compared in full), and no
 * node:crypto to load at start-up for it.
 */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** The remembered features, or undefined when there are none (or the entry is unreadable: then it is rewritten). */
export function readFeatures(dir: string, key: FeatureKey): QemuFeatures | undefined {
  let entry: unknown;
  try {
    entry = JSON.parse(readFileSync(path.join(dir, key.file), "utf8"));
  } catch {
    return undefined;
  }
  const e =
    typeof entry === "object" && entry !== null ? (entry as { key?: unknown; features?: unknown }) : {};
  // Another build that hashes to the same file name (or a stale format) is a miss: its entry is then replaced.
  if (e.key !== key.text) return undefined;
  const f = e.features;
  if (typeof f !== "object" || f === null) return undefined;
  const features = {} as Record<keyof QemuFeatures, boolean>;
  for (const k of FEATURE_KEYS) {
    const v = (f as Record<string, unknown>)[k];
    if (typeof v !== "boolean") return undefined;
    features[k] = v;
  }
  return features;
}

/**
 * Remembers a build's features. Best effort: a cache that cannot be written (read-only home, no space) only
 * costs the schema query next time. Written to a private name first, so a concurrent reader sees all or nothing.
 */
export function writeFeatures(dir: string, key: FeatureKey, qemu: string, features: QemuFeatures): void {
  const file = path.join(dir, key.file);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(tmp, `${JSON.stringify({ qemu, features, key: key.text })}\n`);
    renameSync(tmp, file);
  } catch (err) {
    debug("feature cache: cannot write %s: %s", file, err instanceof Error ? err.message : String(err));
  }
}
