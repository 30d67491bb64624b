import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:net";
import { test } from "node:test";
import { describeStartFailure } from "./start-failure.js";

test("a busy port from node:net names the address and what to do", async () => {
  const holder = createServer().listen(0, "127.0.0.1");
  await once(holder, "listening");
  const { port } = holder.address() as { port: number };
  const second = createServer();
  second.listen(port, "127.0.0.1");
  const [err] = (await once(second, "error")) as [Error];
  holder.close();
  const line = describeStartFailure(new Error("cannot listen", { cause: err }));
  assert.match(line, new RegExp(`^127\\.0\\.0\\.1:${port} is already in use`));
  assert.match(line, /--control-plane or --node-ip-prefix/);
  assert.ok(!line.includes("\n"));
});

test("a busy port reported by grpc-js in a message is found through the cause chain", () => {
  const grpc = new Error(
    "No address added out of total 1 resolved errors: [listen EADDRINUSE: address already in use 127.0.0.1:15012]",
  );
  const line = describeStartFailure(new Error("cannot listen on 127.0.0.1:15012", { cause: grpc }));
  assert.match(line, /^127\.0\.0\.1:15012 is already in use/);
  assert.match(line, /sport = :15012/);
});

test("other failures keep every message of the chain on one line", () => {
  const line = describeStartFailure(new Error("ztunnel node-a failed", { cause: new Error("no token") }));
  assert.equal(line, "the mesh did not start: ztunnel node-a failed: no token");
  assert.equal(describeStartFailure("boom"), "the mesh did not start: boom");
});
