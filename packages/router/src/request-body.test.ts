import assert from "node:assert/strict";
import { PassThrough, Writable } from "node:stream";
import { describe, it } from "node:test";
import { RouterError } from "./errors.js";
import { RequestBody } from "./request-body.js";

/** A sink that keeps what it is written. */
function sink(): { stream: Writable; bytes: () => Buffer; ended: () => boolean } {
  const chunks: Buffer[] = [];
  let ended = false;
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
    final(callback) {
      ended = true;
      callback();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks), ended: () => ended };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("RequestBody", () => {
  it("reads nothing from the client while no attempt takes the body, and replays it all to the next", async () => {
    const source = new PassThrough();
    const body = new RequestBody(source, 16, 1024);
    const first = sink();
    body.pipeTo(first.stream);
    source.write(Buffer.from("abcd"));
    await tick();
    body.detach();
    // Sent while the retry backs off: more than the replay buffer holds.
    source.write(Buffer.alloc(64, 1));
    await tick();
    assert.equal(body.bytes, 4, "nothing was read while detached");
    assert.equal(body.replayable, true);
    const second = sink();
    body.pipeTo(second.stream);
    source.end(Buffer.from("z"));
    await tick();
    assert.deepEqual(
      second.bytes(),
      Buffer.concat([Buffer.from("abcd"), Buffer.alloc(64, 1), Buffer.from("z")]),
    );
    assert.equal(second.ended(), true);
    assert.equal(body.complete, true);
    assert.equal(body.replayable, false, "past the replay buffer now");
  });

  it("refuses a new sink once bytes it can no longer replay were sent", async () => {
    const source = new PassThrough();
    const body = new RequestBody(source, 8, 1024);
    body.pipeTo(sink().stream);
    source.write(Buffer.alloc(32, 3));
    await tick();
    body.detach();
    assert.equal(body.replayable, false);
    const next = sink();
    assert.throws(
      () => body.pipeTo(next.stream),
      (err: unknown) => err instanceof RouterError && err.code === "ERR_BODY_NOT_REPLAYABLE",
    );
    assert.equal(next.bytes().length, 0, "nothing was written to the refused sink");
    assert.equal(next.ended(), false, "the refused sink was not ended as if the body were complete");
  });

  it("reads and drops the rest once released, so the client's connection can go on", async () => {
    const source = new PassThrough();
    const mirror = new PassThrough();
    const mirrored: Buffer[] = [];
    mirror.on("data", (c: Buffer) => mirrored.push(c));
    const body = new RequestBody(source, 8, 1024);
    body.tap(mirror);
    body.pipeTo(sink().stream);
    source.write(Buffer.from("ab"));
    await tick();
    body.detach();
    body.release();
    source.end(Buffer.alloc(100, 4));
    await tick();
    assert.equal(body.complete, true);
    assert.equal(body.bytes, 102);
    assert.equal(Buffer.concat(mirrored).length, 102, "mirrors still get the whole body");
  });
});
