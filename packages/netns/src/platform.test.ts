// Off Linux the package must import cleanly and fail at call time with a typed error. This runs
// everywhere: on Linux a child process pretends to be another platform before importing.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { NetnsError } from "./errors.js";

const script = `
Object.defineProperty(process, "platform", { value: "darwin" });
const netns = await import(${JSON.stringify(fileURLToPath(new URL("./index.ts", import.meta.url)))});
const zds = await import(${JSON.stringify(fileURLToPath(new URL("./zds/index.ts", import.meta.url)))});
const out = { imported: typeof netns.openNetns === "function" && typeof zds.createZdsClient === "function" };
for (const [name, call] of Object.entries({
  openNetns: () => netns.openNetns("/proc/self/ns/net"),
  setSocketMark: () => netns.setSocketMark(0, 1),
  connectSeqpacket: () => netns.connectSeqpacket("/tmp/none.sock"),
})) {
  try { call(); out[name] = "no error"; } catch (e) { out[name] = [e.name, e.code, e instanceof netns.NetnsError]; }
}
out.hello = Buffer.from(zds.encodeHello()).toString("hex"); // the codec needs no Linux
console.log(JSON.stringify(out));
`;

describe("on a platform other than Linux", () => {
  it("imports, then throws ERR_NETNS_UNSUPPORTED from every call", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").at(-1) as string);
    const unsupported = ["NetnsError", "ERR_NETNS_UNSUPPORTED", true];
    assert.deepEqual(out, {
      imported: true,
      openNetns: unsupported,
      setSocketMark: unsupported,
      connectSeqpacket: unsupported,
      hello: "0801",
    });
  });

  it("brands its errors so instanceof holds across copies of the package", () => {
    const err = new NetnsError("ERR_NETNS_SYSCALL", "setns failed: EPERM", {
      errno: "EPERM",
      syscall: "setns",
    });
    assert.equal(err.errno, "EPERM");
    assert.equal(err.syscall, "setns");
    const copy = Object.defineProperty(new Error("x"), Symbol.for("@ambient/netns.error"), { value: true });
    assert.ok(copy instanceof NetnsError);
    assert.ok(!(new Error("x") instanceof NetnsError));
  });
});
