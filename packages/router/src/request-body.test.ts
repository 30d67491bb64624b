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

  describe("a body the client did not finish never reaches the backend as finished", () => {
    /** A client body stream as Node's servers give one: with headers, `aborted`, maybe a stream. */
    function clientBody(headers: Record<string, string> = {}) {
      const source = new PassThrough() as PassThrough & {
        headers: Record<string, string>;
        aborted: boolean;
      };
      source.headers = headers;
      source.aborted = false;
      return source;
    }
    /** A sink that says how it ended: `end` (finished) or the error it was destroyed with. */
    function watched() {
      const s = sink();
      let outcome: string | undefined;
      s.stream.on("finish", () => {
        outcome ??= "end";
      });
      s.stream.on("error", (err: Error) => {
        outcome ??= `destroyed: ${(err as RouterError).code}`;
      });
      s.stream.on("close", () => {
        outcome ??= "destroyed";
      });
      return { ...s, outcome: () => outcome };
    }

    it("destroys the upstream request when the client's body ends short of its content-length", async () => {
      const source = clientBody({ "content-length": "400" });
      const body = new RequestBody(source, 1024, 1024);
      const up = watched();
      body.pipeTo(up.stream);
      source.end(Buffer.alloc(10, 1));
      await tick();
      await tick();
      assert.equal(up.outcome(), "destroyed: ERR_BODY_INCOMPLETE");
      assert.equal(up.ended(), false);
      assert.equal(body.replayable, false, "never sent again either");
    });

    it("destroys it when the client reset its stream (Node ends such a body as if it were whole)", async () => {
      const source = clientBody();
      const body = new RequestBody(source, 1024, 1024);
      const up = watched();
      body.pipeTo(up.stream);
      source.write(Buffer.from("0123456789"));
      await tick();
      source.aborted = true;
      source.emit("aborted");
      source.end();
      await tick();
      await tick();
      assert.equal(up.outcome(), "destroyed: ERR_BODY_INCOMPLETE");
    });

    it("destroys it when the client went away mid-body, and a later attempt is refused", async () => {
      const source = clientBody({ "content-length": "100" });
      const body = new RequestBody(source, 1024, 1024);
      const up = watched();
      body.pipeTo(up.stream);
      source.write(Buffer.alloc(10, 2));
      await tick();
      source.destroy();
      await tick();
      await tick();
      assert.equal(up.outcome(), "destroyed: ERR_BODY_INCOMPLETE");
      assert.throws(
        () => body.pipeTo(sink().stream),
        (err: unknown) => err instanceof RouterError && err.code === "ERR_BODY_INCOMPLETE",
      );
    });

    it("destroys it when the client sends more than its content-length", async () => {
      const source = clientBody({ "content-length": "4" });
      const body = new RequestBody(source, 1024, 1024);
      const up = watched();
      body.pipeTo(up.stream);
      source.write(Buffer.from("abcd"));
      source.end(Buffer.from("GET /admin HTTP/1.1\r\n\r\n"));
      await tick();
      await tick();
      assert.equal(up.outcome(), "destroyed: ERR_BODY_INCOMPLETE");
    });

    it("ends it as usual when the body is whole", async () => {
      const source = clientBody({ "content-length": "4" });
      const body = new RequestBody(source, 1024, 1024);
      const up = watched();
      body.pipeTo(up.stream);
      source.end(Buffer.from("abcd"));
      await tick();
      await tick();
      assert.equal(up.outcome(), "end");
      assert.equal(up.bytes().toString(), "abcd");
      source.destroy();
      await tick();
      assert.equal(up.outcome(), "end", "a close after the end is no cut");
    });
  });
});
