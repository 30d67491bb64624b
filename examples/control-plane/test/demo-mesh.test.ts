import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { before, describe, it } from "node:test";
import { createAuthorizationEngine } from "@ambient/policy";
import { type MeshConfig, parseManifests, translateMesh } from "../src/index.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");

describe("demo mesh manifests", () => {
  let config: MeshConfig;

  before(async () => {
    const names = (await readdir(DEMO_MESH)).filter((n) => n.endsWith(".yaml"));
    const files = await Promise.all(
      names.map(async (path) => ({ path, text: await readFile(join(DEMO_MESH, path), "utf8") })),
    );
    const parsed = parseManifests(files);
    assert.deepEqual(parsed.issues, []);
    config = translateMesh(parsed.objects);
  });

  it("translate without issues into the documented pods, service and nodes", () => {
    assert.deepEqual(config.issues, []);
    assert.deepEqual(
      config.workloads.map((w) => [
        w.workload.name,
        w.aliases[0],
        w.workload.node,
        w.workload.serviceAccount,
      ]),
      [
        ["echo-0", "/127.10.0.3", "node-b", "echo"],
        ["echo-1", "/127.10.0.4", "node-b", "echo"],
        ["sleep-0", "/127.10.0.2", "node-a", "sleep"],
        ["stranger", "/127.10.0.5", "node-a", "stranger"],
        ["waypoint-0", "/127.10.0.6", "node-a", "waypoint"],
        ["web-v1", "/127.10.0.7", "node-b", "web"],
        ["web-v2", "/127.10.0.8", "node-b", "web"],
      ],
    );
    assert.deepEqual(
      config.services.map((s) => [s.key, s.aliases, s.service.ports]),
      [
        [
          "demo/echo.demo.svc.cluster.local",
          ["/127.30.0.1"],
          [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }],
        ],
        [
          "demo/web-v1.demo.svc.cluster.local",
          [],
          [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }],
        ],
        [
          "demo/web-v2.demo.svc.cluster.local",
          [],
          [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }],
        ],
        [
          "demo/web.demo.svc.cluster.local",
          ["/127.30.0.2"],
          [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }],
        ],
      ],
    );
    const web = config.services.find((s) => s.key === "demo/web.demo.svc.cluster.local");
    assert.deepEqual(web?.service.waypoint, {
      address: { network: "", address: Uint8Array.from([127, 10, 0, 6]) },
      hboneMtlsPort: 15008,
    });
    assert.deepEqual(Object.fromEntries(config.nodes), {
      "node-a": [
        "spiffe://cluster.local/ns/demo/sa/sleep",
        "spiffe://cluster.local/ns/demo/sa/stranger",
        "spiffe://cluster.local/ns/demo/sa/waypoint",
      ],
      "node-b": ["spiffe://cluster.local/ns/demo/sa/echo", "spiffe://cluster.local/ns/demo/sa/web"],
    });
  });

  it("let sleep reach echo on 8080 and refuse stranger, plaintext callers and other ports", () => {
    const engine = createAuthorizationEngine();
    for (const authorization of config.authorizations.values()) engine.setAuthorization(authorization);
    const echo = config.workloads.find((w) => w.workload.name === "echo-0")?.workload;
    assert.ok(echo);
    const decide = (identity: string | undefined, port: number): boolean =>
      engine.evaluate({
        source: { ip: "127.10.0.2", ...(identity === undefined ? {} : { identity }) },
        destination: {
          ip: "127.10.0.3",
          port,
          workload: {
            namespace: "demo",
            labels: { app: "echo" },
            authorizationPolicies: echo.authorizationPolicies ?? [],
          },
        },
      }).allowed;
    assert.equal(decide("spiffe://cluster.local/ns/demo/sa/sleep", 8080), true);
    assert.equal(decide("spiffe://cluster.local/ns/demo/sa/stranger", 8080), false);
    assert.equal(decide("spiffe://cluster.local/ns/demo/sa/sleep", 9090), false);
    assert.equal(decide(undefined, 8080), false);
  });
});
