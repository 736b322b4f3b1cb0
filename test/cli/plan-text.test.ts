import { describe, it } from "node:test";
import assert from "node:assert/strict";
import pc from "picocolors";
import { renderPlanText } from "../../src/cli/render/plan-text.js";
import type { PlanTransport } from "../../src/policy/transport.js";
import type { Plan } from "../../src/policy/types.js";

const plain = pc.createColors(false);

function plan(transport?: PlanTransport): Plan {
  return {
    version: 1,
    ok: true,
    bitmaps: [],
    errors: [],
    warnings: [],
    mapping: { source: [], destination: [] },
    payloadBytes: 0,
    ...(transport ? { transport } : {}),
  };
}

const routeOf = (text: string): string[] => text.split("\n").filter((l) => l.startsWith("Route:"));

describe("the human plan output: the transport's route (section 5's `transport`)", () => {
  it("says how each monitor is reached and how the stream and the NBD copy travel", () => {
    const text = renderPlanText(
      plan({ monitors: { source: "tcp", destination: "ssh" }, migration: "tls", nbd: "ssh-tunnel" }),
      plain,
    );
    assert.deepEqual(routeOf(text), [
      "Route: source monitor over TCP, destination monitor over SSH; migration stream over QEMU's TLS, disk copy (NBD) over SSH tunnel.",
    ]);
  });

  it("leaves the disk copy out without --copy-storage, and says when the stream is not known", () => {
    assert.deepEqual(
      routeOf(
        renderPlanText(
          plan({ monitors: { source: "ssh", destination: "ssh" }, migration: "ssh-tunnel", nbd: null }),
          plain,
        ),
      ),
      ["Route: source monitor over SSH, destination monitor over SSH; migration stream over SSH tunnel."],
    );
    assert.deepEqual(
      routeOf(
        renderPlanText(
          plan({ monitors: { source: "unix", destination: "unix" }, migration: null, nbd: "unix" }),
          plain,
        ),
      ),
      [
        "Route: source monitor over unix socket, destination monitor over unix socket; migration stream not known (no --uri), disk copy (NBD) over unix socket.",
      ],
    );
  });

  it("prints no route for a plan made without a transport request", () => {
    assert.deepEqual(routeOf(renderPlanText(plan(), plain)), []);
  });
});
