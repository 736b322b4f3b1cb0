import { Rng } from "./prng.js";
import {
  KiB,
  MiB,
  canPersist,
  type BitmapSpec,
  type DiskSpec,
  type DstSpec,
  type PolicySpec,
  type SetupSpec,
  type StoredSpec,
} from "./model.js";

/**
 * Random but valid setups. "Valid" means QEMU starts and accepts every command of the setup; whether bitferry's
 * plan accepts it is the point of the test, so the generator leans towards plans that pass (a renamed disk usually
 * gets its map entry) while still producing every error the planner knows about. Sizes stay small (64 MiB-ish,
 * granularity mostly 4 KiB or more): with no guest RAM, precopy converges only on small bitmap payloads.
 */

const NAMES = [
  "backup-0",
  "backup-1",
  "backup-2",
  "daily",
  "hourly",
  "weekly",
  "tmp-a",
  "tmp-b",
  "cbt-0001",
  "inc",
] as const;
/** Names QEMU accepts that stress quoting, patterns and the wire aliases. */
const ODD_NAMES = ["L".repeat(300), "a/b", "with space", "dot.ted", "ünï-✓", "*star", "?q"] as const;

const GRANULARITIES: readonly (readonly [number, number])[] = [
  [4, 64 * KiB],
  [3, 4 * KiB],
  [1, 8 * KiB],
  [1, 16 * KiB],
  [1, 128 * KiB],
  [1, MiB],
  [0.3, 512],
];

export interface GenerateOptions {
  /** The names of the lab's build pairs ("7.2→10.0"); the spec stores an index. */
  buildPairs: readonly string[];
}

/**
 * QEMU 10.0 neither inactivates (as a source) nor re-activates on `cont` (as a destination) a -blockdev node
 * without parents while a named -drive exists (see docs/reliability.md): with 10.0 on either side a scenario uses
 * one family of disks only.
 */
function mixesFamilies(pair: string): boolean {
  return !/(^|→)(1\d|[2-9]\d)\./.test(pair);
}

export function generateSetup(seed: number, index: number, o: GenerateOptions): SetupSpec {
  const rng = Rng.for(seed, index);
  const buildPair = rng.int(0, Math.max(0, o.buildPairs.length - 1));
  const family = mixesFamilies(o.buildPairs[buildPair] ?? "")
    ? "any"
    : rng.pick(["drive", "blockdev"] as const);
  const copyStorage = rng.chance(0.1);
  const diskCount = rng.weighted([
    [2, 1],
    [4, 2],
    [3, 3],
    [1, 4],
  ] as const);
  const disks: DiskSpec[] = [];
  for (let i = 0; i < diskCount; i++) disks.push(genDisk(rng, i, copyStorage, family));
  const policy = genPolicy(rng, disks);
  return {
    seed,
    index,
    buildPair,
    disks,
    policy,
    postcopy: !copyStorage && rng.chance(0.08),
    copyStorage,
    resume: rng.chance(0.5),
    maxDowntimeMs: 30_000,
  };
}

function granularity(rng: Rng): number {
  return rng.weighted(GRANULARITIES);
}

function bitmapName(rng: Rng, taken: Set<string>): string {
  for (let i = 0; i < 20; i++) {
    const n = rng.chance(0.06) ? rng.pick(ODD_NAMES) : rng.pick(NAMES);
    if (!taken.has(n)) {
      taken.add(n);
      return n;
    }
  }
  const n = `bm-${taken.size}`;
  taken.add(n);
  return n;
}

function sourceSize(rng: Rng, form: DiskSpec["form"]): number {
  return rng.weighted([
    [6, 64 * MiB],
    [1, 32 * MiB],
    // Not a multiple of 64 granules of 64 KiB: a larger destination would crash QEMU 7.2 (reference R29).
    [1, 64 * MiB + 64 * KiB],
    [1, 128 * MiB],
    [form === "null" ? 0.5 : 0, 1024 * MiB],
  ]);
}

type Family = "any" | "drive" | "blockdev";

function genDisk(rng: Rng, i: number, copyStorage: boolean, family: Family): DiskSpec {
  const form = rng.weighted([
    [family === "drive" ? 0 : 3, "null"],
    [family === "drive" ? 0 : 4, "qcow2"],
    [family === "blockdev" ? 0 : 3, "drive"],
  ] as const);
  const size = sourceSize(rng, form);
  const drive = form === "drive" ? `drive${i}` : undefined;
  const node = form === "drive" ? (rng.chance(0.3) ? `fmt${i}` : undefined) : `disk${i}`;
  const fileNode = form !== "null" && rng.chance(0.4) ? `file${i}` : undefined;
  const throttle = form !== "drive" && rng.chance(0.12) ? `thr${i}` : undefined;
  const mirror = form === "drive" && !copyStorage && rng.chance(0.15);
  const shared = form !== "null" && !copyStorage && rng.chance(0.6);
  const names = new Set<string>();
  const backing =
    form !== "null" && rng.chance(0.2)
      ? {
          node: rng.chance(0.5) ? `base${i}` : undefined,
          stored: ((taken: Set<string>) =>
            Array.from({ length: rng.int(0, 2) }, () => stored(rng, taken, 0)))(new Set()),
        }
      : undefined;
  const storedHere =
    form !== "null"
      ? Array.from(
          {
            length: rng.weighted([
              [5, 0],
              [3, 1],
              [1, 2],
            ]),
          },
          () => stored(rng, names, 0.06),
        )
      : [];
  const bitmaps: BitmapSpec[] = Array.from(
    {
      length: rng.weighted([
        [1, 0],
        [4, 1],
        [3, 2],
        [2, 3],
      ]),
    },
    () => {
      const persistent = form !== "null" && rng.chance(0.45);
      const busy = rng.chance(0.03);
      return {
        name: bitmapName(rng, names),
        granularity: granularity(rng),
        persistent,
        enabled: !busy && rng.chance(0.8),
        busy,
      };
    },
  );
  // A transient bitmap on a protocol node: mostly on a generated node-name, which nothing can address.
  const fileBitmaps: BitmapSpec[] =
    form !== "null" && rng.chance(0.1)
      ? [
          {
            name: bitmapName(rng, new Set()),
            granularity: 64 * KiB,
            persistent: false,
            enabled: true,
            busy: false,
          },
        ]
      : [];
  const writes: [number, number][] = Array.from({ length: rng.int(0, 4) }, () => {
    const len = rng.pick([512, 4 * KiB, 64 * KiB, 300 * KiB, MiB]);
    const off = Math.floor(rng.int(0, Math.floor((Math.min(size, 64 * MiB) - len) / 512))) * 512;
    return [off, len];
  });
  const disk: DiskSpec = {
    index: i,
    form,
    drive,
    node,
    fileNode,
    throttle,
    mirror,
    backing,
    size,
    shared,
    stored: storedHere,
    bitmaps,
    fileBitmaps,
    writes,
    dst: undefined,
  };
  disk.dst = rng.chance(copyStorage ? 0.02 : 0.03) ? undefined : genDst(rng, disk, copyStorage, family);
  return disk;
}

function stored(rng: Rng, names: Set<string>, inUse: number): StoredSpec {
  return {
    name: bitmapName(rng, names),
    granularity: rng.pick([64 * KiB, 64 * KiB, 4 * KiB, 128 * KiB]),
    enabled: rng.chance(0.8),
    inUse: rng.chance(inUse),
  };
}

function genDst(rng: Rng, d: DiskSpec, copyStorage: boolean, family: Family): DstSpec {
  const naming = rng.weighted([
    [6, "same"],
    [3, "renamed"],
    [family === "any" ? 1 : 0, "cross"],
  ] as const);
  const i = d.index;
  let form: DstSpec["form"] = d.form;
  let drive = d.drive;
  let node = d.node;
  if (naming === "renamed") {
    const letter = String.fromCharCode(97 + i);
    if (d.form === "drive") {
      drive = `vd${letter}`;
      node = d.node === undefined ? undefined : `vfmt${i}`;
    } else node = `vd${letter}`;
  } else if (naming === "cross") {
    // A drive on one side, a bare node-name on the other: resolved by DESIGN 3 step 6 without a map.
    if (d.form === "drive") {
      form = "qcow2";
      drive = undefined;
      node = d.node ?? d.drive;
    } else if (d.form === "qcow2") {
      form = "drive";
      drive = d.node;
      node = undefined;
    }
  }
  if (d.shared && form === "null") form = "qcow2";
  let size = d.size;
  if (!d.shared && !copyStorage) {
    size = rng.weighted([
      [12, d.size],
      [1, d.size + 64 * KiB],
      [1, d.size + 4 * MiB],
      [1, d.size - 64 * KiB],
      [0.5, d.size * 2],
    ]);
  }
  if (!d.shared && form !== "null" && !copyStorage && rng.chance(0.08)) form = "raw";
  const names = new Set<string>();
  // On a shared image, often the name of a persistent bitmap the source will store there at the switchover.
  const persistentHere = [
    ...d.stored.map((s) => s.name),
    ...d.bitmaps.filter((b) => b.persistent).map((b) => b.name),
  ];
  const ramName = (): string => {
    const n =
      d.shared && persistentHere.length > 0 && rng.chance(0.5)
        ? rng.pick(persistentHere)
        : bitmapName(rng, names);
    names.add(n);
    return n;
  };
  const ram = rng.chance(0.12) ? [{ name: ramName(), granularity: 64 * KiB }] : [];
  const storedDst =
    !d.shared && (form === "qcow2" || form === "drive") && rng.chance(copyStorage ? 0.05 : 0.2)
      ? [stored(rng, names, 0)]
      : [];
  return {
    form,
    // A raw destination of a drive stays a drive (format=raw), so that the families do not mix.
    drive: form === "drive" || (form === "raw" && d.form === "drive") ? drive : undefined,
    node: form === "drive" || (form === "raw" && d.form === "drive") ? node : (node ?? drive ?? `n${i}`),
    throttle:
      d.throttle !== undefined && form !== "drive" && rng.chance(0.7)
        ? naming === "same"
          ? d.throttle
          : `dthr${i}`
        : undefined,
    size,
    readOnly: rng.chance(0.03),
    backingNode: d.backing ? (rng.chance(0.5) ? d.backing.node : undefined) : undefined,
    stored: storedDst,
    ram,
  };
}

/** The destination address a map entry names for a disk. */
function dstAddress(d: DiskSpec): string | undefined {
  const t = d.dst;
  if (!t) return undefined;
  return t.drive ?? t.node;
}

function srcAddresses(d: DiskSpec): string[] {
  return [d.drive, d.node].filter((x): x is string => x !== undefined);
}

function needsMap(d: DiskSpec): boolean {
  const t = d.dst;
  if (!t) return false;
  const srcNames = new Set(srcAddresses(d));
  return ![t.drive, t.node].some((n) => n !== undefined && srcNames.has(n));
}

function genPolicy(rng: Rng, disks: DiskSpec[]): PolicySpec {
  const doc: Record<string, unknown> = {};
  const strict = rng.chance(0.12);
  if (strict) doc.defaults = false;
  else if (rng.chance(0.1)) doc.defaults = true;
  const all = disks.flatMap((d) =>
    [...d.stored.map((s) => s.name), ...d.bitmaps.map((b) => b.name)].map((name) => ({ d, name })),
  );
  const map: unknown[] = [];
  // Per-bitmap entries: renames, persistence and enabled changes, drops.
  for (const { d, name } of all) {
    const from = rng.pick(srcAddresses(d));
    if (rng.chance(0.08)) {
      map.push({ source: { node: from, bitmap: name }, target: null });
      continue;
    }
    if (!rng.chance(strict ? 0.35 : 0.15)) continue;
    const to = dstAddress(d) ?? "nowhere";
    const target: Record<string, unknown> = { node: to };
    if (rng.chance(0.5)) {
      // Sometimes onto the name of another bitmap of the disk: a conflict the plan must see.
      target.bitmap = rng.chance(0.2) ? rng.pick(all.filter((x) => x.d === d)).name : `${name}-moved`;
    }
    if (rng.chance(0.3) && canPersist(d)) target.persistent = rng.chance(0.5);
    else if (rng.chance(0.1)) target.persistent = false;
    if (rng.chance(0.3)) target.enabled = rng.chance(0.5);
    map.push({
      source: { node: from, bitmap: name },
      target: rng.chance(0.15) && Object.keys(target).length === 1 ? to : target,
    });
  }
  // Per-node entries: where the destination calls a disk differently, usually; sometimes anyway.
  for (const d of disks) {
    const to = dstAddress(d);
    const wanted = to !== undefined && (needsMap(d) ? rng.chance(0.85) : rng.chance(strict ? 0.9 : 0.1));
    if (wanted) map.push({ source: rng.pick(srcAddresses(d)), target: to });
    else if (strict && rng.chance(0.3)) map.push({ source: rng.pick(srcAddresses(d)), target: null });
  }
  if (rng.chance(0.03)) map.push({ source: "no-such-node", target: "x" });
  if (rng.chance(0.03) && all.length > 0)
    map.push({
      source: { node: rng.pick(srcAddresses(rng.pick(disks))), bitmap: "no-such-bitmap" },
      target: null,
    });
  if (map.length > 0) doc.map = rng.shuffle(map);
  if (rng.chance(0.35) && all.length > 0) doc.deny = patterns(rng, all, rng.int(1, 2));
  if (rng.chance(0.15) && all.length > 0) doc.allow = patterns(rng, all, rng.int(1, 3));
  return { doc, format: rng.chance(0.5) ? "yaml" : "json" };
}

function patterns(rng: Rng, all: { d: DiskSpec; name: string }[], n: number): string[] {
  return Array.from({ length: n }, () => {
    const { d, name } = rng.pick(all);
    return rng.weighted([
      [3, name],
      [2, `${name.slice(0, 3)}*`],
      [2, `${rng.pick(srcAddresses(d))}/*`],
      [1, `${rng.pick(srcAddresses(d))}/${name}`],
      [1, `${name.slice(0, -1)}?`],
    ]);
  });
}
