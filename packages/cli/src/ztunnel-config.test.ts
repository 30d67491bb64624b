import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { parse } from "yaml";
import { run, serveDump } from "./test-helpers.js";
import { fetchConfigDump, parseAdminAddress, sectionTable } from "./ztunnel-config.js";

// Dumps recorded from the two ztunnels of the local demo mesh (pnpm demo --keep-running) while sleep-0
// held a connection to echo open: node-a saw it outbound, node-b inbound.
const nodeA = readFileSync(new URL("./fixtures/config-dump-node-a.json", import.meta.url), "utf8");
const nodeB = readFileSync(new URL("./fixtures/config-dump-node-b.json", import.meta.url), "utf8");

/** A port on 127.0.0.1 nothing listens on (bound, then closed). */
async function closedPort(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

function rows(stdout: string): string[][] {
  return stdout
    .trimEnd()
    .split("\n")
    .slice(1)
    .map((l) => l.split(/ {2,}/));
}

describe("ambient ztunnel-config", () => {
  let a: Awaited<ReturnType<typeof serveDump>>;
  let b: Awaited<ReturnType<typeof serveDump>>;
  let admins: string[];
  before(async () => {
    a = await serveDump(nodeA);
    b = await serveDump(nodeB);
    admins = ["--admin", a.address, "--admin", b.address];
  });
  after(async () => {
    await a.close();
    await b.close();
  });

  it("lists every workload once, with its node, waypoint and protocol, in aligned columns", async () => {
    const r = await run(["ztunnel-config", "workloads", ...admins]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^NAMESPACE +POD NAME +ADDRESS +NODE +WAYPOINT +PROTOCOL$/);
    const table = rows(r.stdout);
    assert.equal(table.length, 7, "both dumps hold the same 7 workloads; each is listed once");
    assert.deepEqual(
      table.find((row) => row[1] === "echo-0"),
      ["demo", "echo-0", "127.10.0.3", "node-b", "None", "HBONE"],
    );
    assert.deepEqual(table.find((row) => row[1] === "waypoint-0")?.slice(3), ["node-a", "None", "NONE"]);
    // Aligned: every row's ADDRESS column starts where the header's does.
    const col = (lines[0] ?? "").indexOf("ADDRESS");
    for (const line of lines.slice(1)) assert.match(line.slice(col), /^127\.10\.0\.\d/);
  });

  it("--node keeps the workloads on that node only", async () => {
    const r = await run(["ztunnel-config", "workloads", "--node", "node-a", ...admins]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      rows(r.stdout)
        .map((row) => row[1])
        .sort(),
      ["sleep-0", "stranger", "waypoint-0"],
    );
  });

  it("shows services with their VIP, waypoint (by name) and endpoint count", async () => {
    const r = await run(["ztunnel-config", "services", ...admins]);
    assert.equal(r.code, 0, r.stderr);
    const table = rows(r.stdout);
    assert.deepEqual(
      table.find((row) => row[1] === "web"),
      ["demo", "web", "127.30.0.2", "waypoint-0", "2"],
    );
    assert.deepEqual(
      table.find((row) => row[1] === "echo"),
      ["demo", "echo", "127.30.0.1", "None", "2"],
    );
  });

  it("shows policies with action and scope", async () => {
    const r = await run(["ztunnel-config", "policies", ...admins]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      rows(r.stdout).find((row) => row[1] === "echo-allow-sleep"),
      ["demo", "echo-allow-sleep", "ALLOW", "WORKLOAD_SELECTOR"],
    );
  });

  it("shows each node's certificates and open connections", async () => {
    const certs = await run(["ztunnel-config", "certificates", ...admins]);
    assert.equal(certs.code, 0, certs.stderr);
    assert.deepEqual(
      rows(certs.stdout).map((row) => `${row[0]} ${row[1]}`),
      [
        "node-a spiffe://cluster.local/ns/demo/sa/sleep",
        "node-a spiffe://cluster.local/ns/demo/sa/stranger",
        "node-b spiffe://cluster.local/ns/demo/sa/echo",
        "node-b spiffe://cluster.local/ns/demo/sa/web",
      ],
    );
    assert.ok(rows(certs.stdout).every((row) => row[3] === "Valid" || row[3] === "Expired"));
    const conns = await run(["ztunnel-config", "connections", "--node", "node-b", ...admins]);
    assert.equal(conns.code, 0, conns.stderr);
    assert.deepEqual(rows(conns.stdout), [
      [
        "node-b",
        "inbound",
        "127.10.0.2",
        "spiffe://cluster.local/ns/demo/sa/sleep",
        "127.10.0.4:8080",
        "spiffe://cluster.local/ns/demo/sa/echo",
      ],
    ]);
  });

  it("-o json and -o yaml give the dump's entries for scripts", async () => {
    const json = await run(["ztunnel-config", "connections", "-o", "json", ...admins]);
    assert.equal(json.code, 0, json.stderr);
    const items = JSON.parse(json.stdout) as { node: string; direction: string }[];
    assert.deepEqual(items.map((i) => `${i.node}/${i.direction}`).sort(), [
      "node-a/outbound",
      "node-b/inbound",
    ]);
    const yaml = await run(["ztunnel-config", "policies", "-o", "yaml", ...admins]);
    assert.equal(yaml.code, 0, yaml.stderr);
    const policies = parse(yaml.stdout) as { name: string; groups: unknown[] }[];
    assert.ok(policies.some((p) => p.name === "web-only-from-waypoint" && Array.isArray(p.groups)));
  });

  it("says clearly when the dump has no such section, rather than inventing one", async () => {
    const dump = JSON.parse(nodeA) as Record<string, unknown>;
    delete dump.connections;
    const old = await serveDump(JSON.stringify(dump));
    try {
      const r = await run(["ztunnel-config", "connections", "--admin", old.address]);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, "");
      assert.match(
        r.stderr,
        /^error: the \/config_dump of the ztunnel at 127\.0\.0\.1:\d+ has no "connections" list/,
      );
      assert.equal(r.stderr.trimEnd().split("\n").length, 1);
    } finally {
      await old.close();
    }
  });

  it("warns about an unreachable admin while another answers, and fails with a hint when none does", async () => {
    const dead = await closedPort();
    const partial = await run(["ztunnel-config", "policies", "--admin", dead, "--admin", a.address]);
    assert.equal(partial.code, 0);
    assert.match(
      partial.stderr,
      /^warning: cannot reach the ztunnel admin at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/,
    );
    const none = await run(["ztunnel-config", "policies", "--admin", dead]);
    assert.equal(none.code, 1);
    assert.match(
      none.stderr,
      /^error: cannot reach .*: start the mesh \(pnpm demo --keep-running\) or pass --admin <ip:port>\n$/,
    );
  });

  it("refuses an endpoint that is not a ztunnel admin, and an unknown node", async () => {
    const notFound = await serveDump("{}", 404);
    try {
      const r = await run(["ztunnel-config", "workloads", "--admin", notFound.address]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /answered HTTP 404 to \/config_dump/);
    } finally {
      await notFound.close();
    }
    const r = await run(["ztunnel-config", "workloads", "--node", "node-z", ...admins]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /no ztunnel serves node "node-z" among node-a \(.*\), node-b \(.*\): pass --admin/,
    );
  });

  it("refuses bad usage with exit code 2 and one line", async () => {
    for (const argv of [
      ["ztunnel-config", "workloads", "--admin", "localhost:15000"],
      ["ztunnel-config", "workloads", "--admin", "127.0.0.1"],
      ["ztunnel-config", "listeners", "--admin", "127.0.0.1:1"],
      ["ztunnel-config", "workloads", "-o", "xml"],
    ]) {
      const r = await run(argv);
      assert.equal(r.code, 2, argv.join(" "));
      assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    }
  });

  it("marks a certificate expired after its notAfter", () => {
    const dumps = [
      { admin: "127.0.0.1:1", node: "node-a", dump: JSON.parse(nodeA) as Record<string, unknown> },
    ];
    const status = (now: string) =>
      sectionTable("certificates", dumps, { now: new Date(now) }).table.rows.map((row) => row[3]);
    assert.deepEqual(status("2026-12-06T06:24:46Z"), ["Valid", "Valid"]);
    assert.deepEqual(status("2026-12-06T06:24:48Z"), ["Expired", "Expired"]);
  });

  it("parses only canonical ip:port admin addresses", () => {
    assert.deepEqual(parseAdminAddress("127.20.0.1:15000"), { host: "127.20.0.1", port: 15000 });
    assert.deepEqual(parseAdminAddress("[::1]:15000"), { host: "::1", port: 15000 });
    for (const bad of [
      "127.1:15000",
      "127.0.0.1:0",
      "127.0.0.1:70000",
      "[127.0.0.1]:1",
      "::1:15000",
      "host:1",
    ]) {
      assert.throws(() => parseAdminAddress(bad), { code: "ERR_CLI_USAGE" }, bad);
    }
  });
});

describe("fetchConfigDump's deadline", () => {
  it("refuses a timeout that would mean none, or one no timer can hold", () => {
    for (const timeoutMs of [0, -1, Number.NaN, 2 ** 31, 1.5]) {
      assert.throws(() => fetchConfigDump("127.0.0.1:1", timeoutMs), { code: "ERR_CLI_USAGE" });
    }
  });

  it("gives up on an answer that trickles in past the deadline", { timeout: 20_000 }, async () => {
    // A byte every 100 ms keeps the socket busy (its timeout is for silence) for about 4 s.
    const server = createServer((socket) => {
      socket.on("error", () => {});
      socket.write("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n");
      let sent = 0;
      const body = `{"node":{"name":"n"},"workloads":[${" ".repeat(20)}]}`.slice(0, 42);
      const timer = setInterval(() => {
        if (socket.destroyed || sent >= body.length) {
          clearInterval(timer);
          socket.end();
          return;
        }
        socket.write(body[sent++] as string);
      }, 100);
      socket.on("close", () => clearInterval(timer));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as { port: number };
      await assert.rejects(fetchConfigDump(`127.0.0.1:${port}`, 500), { code: "ERR_ADMIN_UNREACHABLE" });
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
