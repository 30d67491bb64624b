import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { openInBrowser } from "./dashboard.js";
import { run } from "./test-helpers.js";

/** A stand-in control plane admin port answering `/dashboard/data` with `body`. */
async function serveData(body: string, status = 200): Promise<{ address: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url === "/dashboard/data")
      res.writeHead(status, { "content-type": "application/json" }).end(body);
    else res.writeHead(404).end("not found\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const DATA = JSON.stringify({
  workloads: [{ id: "demo/sleep-0" }, { id: "demo/echo-0" }],
  edges: [{ id: "demo/sleep-0->demo/echo-0" }],
  proxies: [
    { kind: "ztunnel", name: "node-a", up: true },
    { kind: "ztunnel", name: "node-b", up: false },
  ],
});

describe("ambient dashboard", () => {
  let plane: Awaited<ReturnType<typeof serveData>>;
  let fakeBin: string;
  before(async () => {
    plane = await serveData(DATA);
    // An xdg-open that writes down what it was asked to open.
    fakeBin = await mkdtemp(join(tmpdir(), "ambient-cli-xdg-"));
    await writeFile(join(fakeBin, "xdg-open"), `#!/bin/sh\necho "$1" > "${join(fakeBin, "opened")}"\n`);
    await chmod(join(fakeBin, "xdg-open"), 0o755);
  });
  after(async () => {
    await plane?.close();
    if (fakeBin !== undefined) await rm(fakeBin, { recursive: true, force: true });
  });

  it("has --help", async () => {
    const r = await run(["dashboard", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: ambient dashboard/);
    for (const flag of ["--admin <ip:port>", "--no-browser", "--timeout <ms>"])
      assert.ok(r.stdout.includes(flag), flag);
    assert.match((await run(["--help"])).stdout, /dashboard/);
  });

  it("prints the page's address and a summary, and opens nothing when not at a terminal", async () => {
    const r = await run(["dashboard", "--admin", plane.address], { env: { PATH: fakeBin } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `http://${plane.address}/dashboard\n`);
    assert.equal(r.stderr, "2 workloads, 1 edges in the last minute, 1 of 2 proxies answering\n");
    await sleep(100);
    await assert.rejects(readFile(join(fakeBin, "opened"), "utf8"), { code: "ENOENT" });
  });

  it("opens the page with xdg-open at a terminal, unless --no-browser", async () => {
    const off = await run(["dashboard", "--admin", plane.address, "--no-browser"], {
      tty: true,
      env: { PATH: fakeBin },
    });
    assert.equal(off.code, 0);
    assert.doesNotMatch(off.stderr, /opened/);
    const r = await run(["dashboard", "--admin", plane.address], { tty: true, env: { PATH: fakeBin } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /opened in your browser \(xdg-open\)/);
    // xdg-open runs detached: poll for what it wrote, to a deadline a loaded machine meets.
    let opened = "";
    const deadline = Date.now() + 10_000;
    while (opened === "" && Date.now() < deadline) {
      opened = await readFile(join(fakeBin, "opened"), "utf8").catch(() => "");
      if (opened === "") await sleep(50);
    }
    assert.equal(opened, `http://${plane.address}/dashboard\n`);
    await rm(join(fakeBin, "opened"));
  });

  it("says so when xdg-open is missing", async () => {
    const r = await run(["dashboard", "--admin", plane.address], {
      tty: true,
      env: { PATH: "/nonexistent" },
    });
    assert.equal(r.code, 0);
    assert.match(r.stderr, /xdg-open not found: open the address above/);
    assert.equal(openInBrowser("http://x", { isTTY: true, path: "" }), "no xdg-open");
    assert.equal(openInBrowser("http://x", { isTTY: false, path: fakeBin }), "not a terminal");
  });

  it("fails in one line with what to do when nothing answers, or the answer is not the page's data", async () => {
    const gone = await serveData(DATA);
    await gone.close();
    const r = await run(["dashboard", "--admin", gone.address]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: the control plane admin at 127\.0\.0\.1:\d+ did not answer \(.*\): start the mesh with `pnpm demo --keep-running` or pass --admin\n$/,
    );
    const other = await serveData("{}", 404);
    try {
      const notPage = await run(["dashboard", "--admin", other.address]);
      assert.equal(notPage.code, 1);
      assert.match(
        notPage.stderr,
        /answered 404 for \/dashboard\/data: is it a control plane with the live mesh page\?/,
      );
    } finally {
      await other.close();
    }
    const bad = await run(["dashboard", "--admin", "localhost:15014"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /is not ip:port/);
  });
});
