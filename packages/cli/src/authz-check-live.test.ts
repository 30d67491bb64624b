import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ipBytes } from "./authz-check-live.js";
import { run, serveDump } from "./test-helpers.js";

// The recorded dumps of the demo mesh's two ztunnels (see ztunnel-config.test.ts).
const nodeA = readFileSync(new URL("./fixtures/config-dump-node-a.json", import.meta.url), "utf8");
const nodeB = readFileSync(new URL("./fixtures/config-dump-node-b.json", import.meta.url), "utf8");

describe("ambient authz check --live", () => {
  let a: Awaited<ReturnType<typeof serveDump>>;
  let b: Awaited<ReturnType<typeof serveDump>>;
  let admins: string[];
  before(async () => {
    a = await serveDump(nodeA);
    b = await serveDump(nodeB);
    admins = ["--live", "--admin", a.address, "--admin", b.address];
  });
  after(async () => {
    await a.close();
    await b.close();
  });

  const cases: { from: string; to: string; allowed: boolean; hops: string[] }[] = [
    {
      from: "stranger",
      to: "echo:80",
      allowed: false,
      hops: [
        "ztunnel (node node-b) denied by demo/echo-allow-sleep, rule 0: principals: cluster.local/ns/demo/sa/stranger is not in [cluster.local/ns/demo/sa/sleep]",
        "ztunnel (node node-b) denied by demo/echo-allow-sleep, rule 0: principals: cluster.local/ns/demo/sa/stranger is not in [cluster.local/ns/demo/sa/sleep]",
      ],
    },
    {
      from: "demo/sleep-0",
      to: "echo:80",
      allowed: true,
      hops: [
        "ztunnel (node node-b) allowed by demo/echo-allow-sleep, rule 0",
        "ztunnel (node node-b) allowed by demo/echo-allow-sleep, rule 0",
      ],
    },
    {
      from: "stranger",
      to: "pod/web-v1:8080",
      allowed: false,
      hops: [
        "ztunnel (node node-b) denied by demo/web-only-from-waypoint, rule 0: principals: cluster.local/ns/demo/sa/stranger is not in [cluster.local/ns/demo/sa/waypoint]",
      ],
    },
  ];
  for (const c of cases) {
    it(`${c.from} -> ${c.to}: ${c.allowed ? "allowed" : "denied"} by the ztunnels' own policies`, async () => {
      const r = await run(["authz", "check", "--from", c.from, "--to", c.to, "-o", "json", ...admins]);
      assert.equal(r.code, 0, r.stderr);
      const data = JSON.parse(r.stdout) as {
        allowed: boolean;
        hops: { enforcedBy: string; explanation: string }[];
      };
      assert.equal(data.allowed, c.allowed);
      assert.deepEqual(
        data.hops.map((h) => `${h.enforcedBy} ${h.explanation}`),
        c.hops,
      );
    });
  }

  it("checks a waypoint-bound service at its endpoints from the waypoint, and says the L7 part is not visible", async () => {
    const r = await run([
      "authz",
      "check",
      "--from",
      "sleep-0",
      "--to",
      "web:80",
      "--method",
      "POST",
      ...admins,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ALLOWED {2}demo\/sleep-0 -> service demo\/web:80\n/);
    assert.match(
      r.stdout,
      /demo\/waypoint-0 \(spiffe:\/\/cluster\.local\/ns\/demo\/sa\/waypoint\) -> pod demo\/web-v1 127\.10\.0\.7:8080/,
    );
    assert.match(
      r.stdout,
      /note: service demo\/web goes through the waypoint at 127\.10\.0\.6; its L7 policies are not in the ztunnels' \/config_dump: check them with --manifests/,
    );
    assert.match(r.stdout, /note: --live checks the ztunnels \(L4\) only: --method and --path were not used/);
  });

  it("refuses --admin without --live, and unknown workloads, in one line", async () => {
    const noLive = await run(["authz", "check", "--from", "a", "--to", "b:1", "--admin", a.address]);
    assert.equal(noLive.code, 2);
    assert.equal(noLive.stderr, "error: --admin is for --live checks: add --live, or drop --admin\n");
    const unknown = await run(["authz", "check", "--from", "nobody", "--to", "echo:80", ...admins]);
    assert.equal(unknown.code, 1);
    assert.match(
      unknown.stderr,
      /^error: workload "nobody" is not known to the ztunnels at .*: check the name\n$/,
    );
  });

  it("turns the dump's address text back into bytes", () => {
    assert.deepEqual([...ipBytes("10.1.2.3")], [10, 1, 2, 3]);
    assert.deepEqual([...ipBytes("::1")], [...new Array(15).fill(0), 1]);
    assert.deepEqual([...ipBytes("fd00:1::2:3")], [0xfd, 0, 0, 1, ...new Array(8).fill(0), 0, 2, 0, 3]);
    assert.deepEqual([...ipBytes("::ffff:10.0.0.1")], [...new Array(10).fill(0), 0xff, 0xff, 10, 0, 0, 1]);
    assert.deepEqual([...ipBytes("1:2:3:4:5:6:7:8")], [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]);
    assert.throws(() => ipBytes("10.0.0"), { code: "ERR_ADMIN_RESPONSE" });
  });
});
