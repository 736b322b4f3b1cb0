import type { MigrationInfo } from "../../src/qemu/replies.js";
import type { QemuMonitor } from "../../src/qemu/monitor.js";

/** A benchmark run in which bitferry itself failed: kept in the results, because it is a finding. */
export interface RunFailure {
  section: string;
  what: string;
  /** bitferry's run error code (`NOT_CONVERGING`, `QEMU_ERROR`, ...), or VERIFY when a bitmap was not verified. */
  code: string;
  message: string;
}

/** bitferry returned a failed result for a run the benchmark expected to succeed. */
export class RunFailed extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/**
 * The source's final query-migrate. QEMU 7.2 switches to `completed` before it computes `total-time` and
 * `downtime` (migration_completion, then migration_iteration_finish), so a reply in between says 0 for both:
 * wait until `total-time` is set.
 */
export async function finalMigrationInfo(mon: QemuMonitor): Promise<MigrationInfo> {
  for (let i = 0; ; i++) {
    const info = await mon.migrationInfo();
    if ((info.status === "completed" && (info["total-time"] ?? 0) > 0) || i >= 100) return info;
    await new Promise((r) => setTimeout(r, 20));
  }
}
