import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { LineDecoder, encodeMessage } from "../../src/qmp/framing.js";
import { QmpProtocolError } from "../../src/qmp/errors.js";

describe("LineDecoder", () => {
  it("splits CRLF and LF lines and keeps partial lines across chunks", () => {
    const d = new LineDecoder();
    assert.deepEqual(d.push(Buffer.from('{"a":1}\r\n{"b"')), ['{"a":1}']);
    assert.equal(d.pending, 4);
    // The empty line between them is skipped; the CR before a chunk boundary waits for its LF.
    assert.deepEqual(d.push(Buffer.from(':2}\n\r\n{"c":3}\r')), ['{"b":2}']);
    assert.deepEqual(d.push(Buffer.from("\n")), ['{"c":3}']);
    assert.equal(d.pending, 0);
  });

  it("handles a line split at every byte boundary", () => {
    const text = '{"return": {"x": "\u00e9"}, "id": "bf-1"}\r\n';
    const bytes = Buffer.from(text, "utf8");
    for (let cut = 1; cut < bytes.length; cut++) {
      const d = new LineDecoder();
      const out = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
      assert.deepEqual(out, [text.slice(0, -2)], `cut at ${cut}`);
    }
  });

  it("a character cut off by the line end decodes as toString decodes it, and stays out of the next line", () => {
    const bad = Buffer.concat([
      Buffer.from('{"x": "a'),
      Buffer.from([0xe2, 0x82]),
      Buffer.from('"}\n{"y": 1}\n'),
    ]);
    for (let cut = 1; cut < bad.length; cut++) {
      const d = new LineDecoder();
      const out = [...d.push(bad.subarray(0, cut)), ...d.push(bad.subarray(cut))];
      assert.deepEqual(
        out,
        [bad.subarray(0, bad.indexOf(0x0a)).toString("utf8"), '{"y": 1}'],
        `cut at ${cut}`,
      );
    }
    const cutAtEnd = new LineDecoder();
    const line = Buffer.concat([Buffer.from("ab"), Buffer.from([0xe2, 0x82]), Buffer.from('\n{"y": 1}\n')]);
    assert.deepEqual(cutAtEnd.push(line), ["ab\ufffd", '{"y": 1}']);
  });

  it("rejects a line longer than the cap, without holding it", () => {
    const d = new LineDecoder(1024);
    assert.throws(() => d.push(Buffer.alloc(2000, 0x61)), QmpProtocolError);
    const d2 = new LineDecoder(1024);
    d2.push(Buffer.alloc(1000, 0x61));
    assert.throws(() => d2.push(Buffer.alloc(100, 0x61)), /longer than 1024 bytes/);
    assert.equal(d2.pending, 0);
  });

  it("accepts a line of exactly the cap", () => {
    const d = new LineDecoder(10);
    assert.deepEqual(d.push(Buffer.from("0123456789\n")), ["0123456789"]);
  });

  it("encodes one command per line", () => {
    assert.equal(
      encodeMessage({ execute: "quit", id: "bf-1" }).toString(),
      '{"execute":"quit","id":"bf-1"}\n',
    );
  });
});
