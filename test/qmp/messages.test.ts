import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { classifyMessage, peekEventName } from "../../src/qmp/messages.js";

describe("classifyMessage", () => {
  it("recognises the greeting of QEMU 7.2", () => {
    const m = classifyMessage({
      QMP: {
        version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u18" },
        capabilities: ["oob"],
      },
    });
    assert.equal(m.kind, "greeting");
    assert.deepEqual(m.version, { major: 7, minor: 2, micro: 22, package: "Debian 1:7.2+dfsg-7+deb12u18" });
    assert.deepEqual(m.capabilities, ["oob"]);
  });

  it("recognises replies, errors and events", () => {
    assert.deepEqual(classifyMessage({ return: {}, id: "bf-1" }), { kind: "return", id: "bf-1", value: {} });
    assert.deepEqual(classifyMessage({ error: { class: "GenericError", desc: "boom" }, id: "bf-2" }), {
      kind: "error",
      id: "bf-2",
      errorClass: "GenericError",
      desc: "boom",
    });
    const ev = classifyMessage({ timestamp: { seconds: 1, microseconds: 2 }, event: "STOP" });
    assert.deepEqual(ev, {
      kind: "event",
      event: "STOP",
      data: {},
      timestamp: { seconds: 1, microseconds: 2 },
    });
  });

  it("flags what is not QMP", () => {
    assert.equal(classifyMessage([1, 2]).kind, "unknown");
    assert.equal(classifyMessage("x").kind, "unknown");
    assert.equal(classifyMessage({ hello: 1 }).kind, "unknown");
    assert.equal(classifyMessage({ QMP: { version: {} } }).kind, "unknown");
    assert.equal(classifyMessage({ error: "nope" }).kind, "unknown");
  });
});

describe("peekEventName", () => {
  it("reads the name of an event as QEMU prints it", () => {
    const line =
      '{"timestamp": {"seconds": 1732560000, "microseconds": 123456}, "event": "MIGRATION_PASS", "data": {"pass": 7}}';
    assert.equal(peekEventName(line), "MIGRATION_PASS");
  });

  it("leaves everything else to the full parser", () => {
    assert.equal(peekEventName('{"return": {}, "id": "bf-1"}'), undefined);
    assert.equal(peekEventName('{"event": "STOP"}'), undefined);
  });
});
