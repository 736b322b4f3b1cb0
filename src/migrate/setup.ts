import { QmpCommandError } from "../qmp/errors.js";
import type { MigrationInfo } from "../qemu/replies.js";
import type { RunContext } from "./context.js";
import { RunError } from "./errors.js";
import { quiet, refused, RUNNING_STATUSES, type Side } from "./sides.js";
import type { TogetherChange } from "./steps.js";
import { setupTransport } from "./transport.js";

/**
 * The source's migration status, read while the plan reads both sides (so it costs no round trip of its own); the
 * setup refuses to touch a source that already migrates. The caller starts it before the plan and hands it on.
 */
export function readSourceMigration(ctx: RunContext): Promise<MigrationInfo> {
  // A plan that fails or finds errors never looks at it.
  return quiet(ctx.on(ctx.src, (m) => m.migrationInfo(), "checking for a running migration"));
}

/**
 * DESIGN section 4 item 3: the capabilities and the mappings of both sides, then the incoming side. Each change is
 * a step; the disk copy (storage.ts), the merged temporaries (streams.ts) and the migration follow. The four
 * changes go out at once, as the bare QMP sequence sends them: each side's pair pipelined on its monitor, both
 * monitors at the same time; the stack still records them in the order capabilities (destination, source),
 * mapping (destination, source).
 */
export async function setupSides(ctx: RunContext, sourceMigration: Promise<MigrationInfo>): Promise<void> {
  ctx.checkpoint();
  ctx.progress("setup", { message: "setting capabilities and bitmap mappings on both sides" });
  const planned = ctx.planResult;
  const info = await sourceMigration;
  if (info.status !== undefined && RUNNING_STATUSES.has(info.status)) {
    throw new RunError(
      "QEMU_ERROR",
      `a migration is already in progress on the source (status ${info.status})`,
    );
  }
  ctx.checkpoint();
  ctx.seen.downtimeOriginal = planned.source.snapshot.migrationParameters["downtime-limit"];
  const changes: TogetherChange[] = [];
  const dstCaps = capabilitiesChange(ctx, ctx.dst, planned.destination.snapshot.migrationCapabilities, {
    "dirty-bitmaps": true,
    events: true,
  });
  const srcCaps = capabilitiesChange(ctx, ctx.src, planned.source.snapshot.migrationCapabilities, {
    "dirty-bitmaps": true,
    events: true,
    "pause-before-switchover": true,
  });
  if (dstCaps) changes.push(dstCaps);
  if (srcCaps) changes.push(srcCaps);
  for (const side of [ctx.dst, ctx.src]) {
    const mapping = side === ctx.src ? ctx.plan.mapping.source : ctx.plan.mapping.destination;
    changes.push({
      // QEMU cannot unset a mapping; every run sets its own, so a later run is not affected by this one's.
      step: { name: "mapping", side: side.name, what: `the ${side.name}'s block-bitmap-mapping` },
      change: () =>
        ctx.on(
          side,
          (m) => m.setMigrationParameters({ "block-bitmap-mapping": mapping }),
          "setting the bitmap mapping",
        ),
    });
  }
  await ctx.steps.together(changes);
  await setupTransport(ctx);
  await startIncoming(ctx);
}

/**
 * Step "capabilities": sets what the run needs; the clean puts back what it changed, where QEMU allows it.
 * Recorded before the command is sent (`refused`): QEMU takes the change even if --timeout or Ctrl-C fires first.
 * Undefined: nothing to change.
 */
function capabilitiesChange(
  ctx: RunContext,
  side: Side,
  current: Record<string, boolean>,
  wanted: Record<string, boolean>,
): TogetherChange | undefined {
  const change: Record<string, boolean> = {};
  const original: Record<string, boolean> = {};
  for (const [cap, state] of Object.entries(wanted)) {
    if (current[cap] !== state) {
      change[cap] = state;
      original[cap] = current[cap] ?? false;
    }
  }
  if (Object.keys(change).length === 0) return undefined;
  return {
    step: {
      name: "capabilities",
      side: side.name,
      what: `the ${side.name}'s migration capabilities (${Object.keys(change).join(", ")})`,
      // The two sides' restores are independent: unwound at the same time.
      together: "capabilities",
      clean: async () => {
        // QEMU refuses capability changes while a migration runs: they stay. A destination that only listens
        // reports `setup` from QEMU 10.0 on (7.2 reports nothing) and takes the change (observed on both). Once
        // both sides completed there is nothing to ask.
        const now = ctx.seen.completed ? "completed" : (await side.undo((m) => m.migrationInfo())).status;
        const listening = side.name === "destination" && now === "setup";
        if (now !== undefined && RUNNING_STATUSES.has(now) && !listening) return;
        await side.undo((m) => m.setMigrationCapabilities(original));
      },
    },
    change: () => ctx.on(side, (m) => m.setMigrationCapabilities(change), "setting migration capabilities"),
    refused,
  };
}

/**
 * Step "incoming": `migrate-incoming` on a destination started with `-incoming defer`. A destination started with
 * `-incoming URI` already listens (QEMU answers "already been started") and there is nothing to record. No undo:
 * QEMU has no command that stops listening, and a failed migration ends the incoming side anyway.
 */
async function startIncoming(ctx: RunContext): Promise<void> {
  const exitOnError = ctx.planResult.destination.facts.features.incomingExitOnError ? false : undefined;
  try {
    await ctx.dst.mon.migrateIncoming(ctx.endpoints.incoming, exitOnError);
  } catch (err) {
    if (!(err instanceof QmpCommandError && err.desc.includes("already been started"))) {
      throw ctx.dst.error(err, "starting the incoming side");
    }
    return;
  }
  ctx.steps.push({
    name: "incoming",
    side: "destination",
    what: `the incoming side on ${ctx.endpoints.incoming}`,
  });
}
