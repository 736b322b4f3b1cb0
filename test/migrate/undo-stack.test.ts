import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { UndoStack, type Step, type StepSide } from "../../src/migrate/steps.js";

/** A step that logs its undos into `log`. */
function step(log: string[], name: Step["name"], what: string, side: StepSide = "source"): Step {
  return {
    name,
    side,
    what,
    abort: () => {
      log.push(`abort ${what}`);
      return Promise.resolve();
    },
    clean: () => {
      log.push(`clean ${what}`);
      return Promise.resolve();
    },
  };
}

describe("the run's stack of undoable steps", () => {
  it("a failed run: every abort newest first, then every clean newest first (util/transactions.c's order)", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    s.push(step(log, "capabilities", "a"));
    s.push(step(log, "export", "b"));
    s.push(step(log, "migration", "c"));
    assert.deepEqual(await s.unwind(true), []);
    assert.deepEqual(log, ["abort c", "abort b", "abort a", "clean c", "clean b", "clean a"]);
  });

  it("a run that succeeded: only the cleans, and the stack is empty afterwards", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    s.push(step(log, "capabilities", "a"));
    s.push(step(log, "migration", "b"));
    await s.unwind(false);
    await s.unwind(true);
    assert.deepEqual(log, ["clean b", "clean a"]);
  });

  it("an undo that fails is reported and the others still run", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    s.push(step(log, "capabilities", "a"));
    s.push({
      name: "export",
      side: "destination",
      what: "the export x",
      clean: () => Promise.reject(new Error("QEMU refused")),
    });
    s.push(step(log, "mirror", "c"));
    const failures = await s.unwind(true);
    assert.deepEqual(log, ["abort c", "abort a", "clean c", "clean a"]);
    assert.deepEqual(failures, [
      { name: "export", side: "destination", what: "the export x", undo: "clean", message: "QEMU refused" },
    ]);
  });

  it("a side that is gone is left alone silently; one that stopped answering is left alone and reported", async () => {
    const log: string[] = [];
    const gone: Partial<Record<StepSide, "lost" | "unresponsive">> = {
      source: "lost",
      destination: "unresponsive",
    };
    const s = new UndoStack({ skip: (side) => gone[side] });
    s.push(step(log, "capabilities", "src", "source"));
    s.push(step(log, "export", "dst", "destination"));
    s.push(step(log, "nbd-socket-dir", "here", "local"));
    const failures = await s.unwind(false);
    assert.deepEqual(log, ["clean here"]);
    assert.deepEqual(
      failures.map((f) => [f.what, f.message]),
      [["dst", "the destination does not answer"]],
    );
  });

  it("an undo that fails because its QEMU ended meanwhile is not a failure: what it made went with it", async () => {
    let lost = false;
    const s = new UndoStack({ skip: () => (lost ? "lost" : undefined) });
    s.push({
      name: "export",
      side: "destination",
      clean: () => {
        lost = true;
        return Promise.reject(new Error("the monitor closed"));
      },
    });
    assert.deepEqual(await s.unwind(false), []);
  });

  it("an undo that does not return within its bound is given up on and reported", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    s.push(step(log, "capabilities", "a"));
    s.push({ name: "mirror", side: "source", boundMs: 20, clean: () => new Promise<void>(() => undefined) });
    const failures = await s.unwind(false);
    assert.deepEqual(log, ["clean a"]);
    assert.deepEqual(
      failures.map((f) => f.message),
      ["no answer within 20 ms"],
    );
  });

  it("release runs a step's clean at once and the unwinding does not run it again", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    s.push(step(log, "capabilities", "a"));
    const b = s.push(step(log, "export", "b"));
    const c = s.push(step(log, "mirror", "c"));
    await s.release([b, c]);
    assert.deepEqual(log, ["clean c", "clean b"]);
    await s.unwind(true);
    assert.deepEqual(log, ["clean c", "clean b", "abort a", "clean a"]);
  });

  it("onStep sees each step once it is recorded; what it throws leaves the step to be undone", async () => {
    const log: string[] = [];
    const seen: string[] = [];
    const s = new UndoStack({
      onStep: (r) => {
        seen.push(`${r.index} ${r.name} ${r.side}`);
        if (r.name === "export") throw new Error("injected");
      },
    });
    s.push(step(log, "capabilities", "a"));
    assert.throws(() => s.push(step(log, "export", "b", "destination")), /injected/);
    await s.unwind(true);
    assert.deepEqual(seen, ["0 capabilities source", "1 export destination"]);
    assert.deepEqual(log, ["abort b", "abort a", "clean b", "clean a"]);
  });

  it("around: the step is recorded before its change (whose failure may need the undo), onStep only after", async () => {
    const log: string[] = [];
    const seen: string[] = [];
    const s = new UndoStack({ onStep: (r) => seen.push(r.name) });
    await assert.rejects(
      s.around(step(log, "migration", "m"), () => Promise.reject(new Error("refused"))),
      /refused/,
    );
    assert.deepEqual(seen, []);
    await s.unwind(true);
    assert.deepEqual(log, ["abort m", "clean m"]);
    assert.equal(await s.around(step(log, "migration", "n"), () => Promise.resolve(7)), 7);
    assert.deepEqual(seen, ["migration"]);
  });

  it("together: recorded in the given order (sent-style first), onStep in order up to the first failure", async () => {
    const log: string[] = [];
    const seen: string[] = [];
    const s = new UndoStack({ onStep: (r) => seen.push(`${r.index} ${r.name} ${r.side}`) });
    const refused = (err: unknown): boolean => err instanceof Error && err.message === "refused";
    let release: () => void = () => undefined;
    const slow = new Promise<void>((resolve) => (release = resolve));
    const done = s.together([
      // The destination answers last: the order of the records is still the order given.
      { step: step(log, "capabilities", "caps d", "destination"), change: () => slow, refused },
      { step: step(log, "capabilities", "caps s", "source"), change: () => Promise.resolve(), refused },
      {
        step: step(log, "mapping", "map d", "destination"),
        change: () => Promise.reject(new Error("refused")),
      },
      { step: step(log, "mapping", "map s", "source"), change: () => Promise.resolve() },
    ]);
    release();
    await assert.rejects(done, /refused/);
    assert.deepEqual(seen, ["0 capabilities destination", "1 capabilities source"]);
    // The refused mapping is not on the stack; the source's, made after it had failed, is (and undone).
    await s.unwind(false);
    assert.deepEqual(log, ["clean map s", "clean caps s", "clean caps d"]);
  });

  it("together: a refused sent-style change is dropped, one that got no answer stays for its undo", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    const refused = (err: unknown): boolean => err instanceof Error && err.message === "refused";
    await assert.rejects(
      s.together([
        {
          step: step(log, "capabilities", "a", "destination"),
          change: () => Promise.reject(new Error("refused")),
          refused,
        },
        {
          step: step(log, "capabilities", "b", "source"),
          change: () => Promise.reject(new Error("timed out")),
          refused,
        },
      ]),
      /refused/,
    );
    await s.unwind(true);
    assert.deepEqual(log, ["abort b", "clean b"]);
  });

  it("steps with the same `together` key next to each other are undone at the same time", async () => {
    const log: string[] = [];
    const s = new UndoStack();
    let dStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => (dStarted = resolve));
    s.push(step(log, "watch", "w", "local"));
    s.push({
      name: "capabilities",
      side: "destination",
      what: "d",
      together: "capabilities",
      clean: () => {
        log.push("clean d");
        dStarted();
        return Promise.resolve();
      },
    });
    s.push({
      name: "capabilities",
      side: "source",
      what: "s",
      together: "capabilities",
      // Waits for the destination's undo to start: one after the other, it would time out instead.
      boundMs: 5_000,
      clean: async () => {
        await started;
        log.push("clean s");
        throw new Error("QEMU refused");
      },
    });
    const failures = await s.unwind(false);
    assert.deepEqual(log, ["clean d", "clean s", "clean w"]);
    assert.deepEqual(
      failures.map((f) => `${f.what ?? ""}: ${f.message}`),
      ["s: QEMU refused"],
    );
  });
});
