// @grpc/grpc-js-xds, unmodified, as a proxyless client of our SotW server: LDS -> RDS -> CDS -> EDS
// to a real grpc-js backend, and traffic moves when the endpoints in the cache change.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import type { NackRecord } from "../src/server-session.js";
import { TypeUrl, typeRegistry } from "../src/type-registry.js";
import { createXdsServer, type XdsServer } from "../src/xds-server.js";

const here = dirname(fileURLToPath(import.meta.url));

async function startBackend(name: string): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(
    {
      Who: {
        path: "/interop.Echo/Who",
        requestStream: false,
        responseStream: false,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
    },
    {
      Who: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        callback(null, Buffer.from(name)),
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { server, port };
}

function endpoints(port: number) {
  return {
    clusterName: "echo-cluster",
    endpoints: [
      {
        locality: { region: "r1", zone: "z1" },
        loadBalancingWeight: { value: 1 },
        lbEndpoints: [
          {
            endpoint: { address: { socketAddress: { address: "127.0.0.1", portValue: port } } },
            healthStatus: "HEALTHY" as const,
            loadBalancingWeight: { value: 1 },
          },
        ],
      },
    ],
  };
}

describe("@grpc/grpc-js-xds interop", () => {
  let xds: XdsServer;
  let a: { server: grpc.Server; port: number };
  let b: { server: grpc.Server; port: number };
  let app: ChildProcess | undefined;
  const lines: string[] = [];
  const nacks: NackRecord[] = [];
  const waiters: { match: (l: string) => boolean; resolve: () => void }[] = [];

  before(async () => {
    a = await startBackend("A");
    b = await startBackend("B");
    xds = createXdsServer({ debounceMs: 10, onNack: (_ctx, nack) => nacks.push(nack) });
    const cache = xds.cache;
    cache.batch(() => {
      cache.set(TypeUrl.listener, "echo.test:8080", {
        name: "echo.test:8080",
        apiListener: {
          apiListener: typeRegistry.pack(TypeUrl.httpConnectionManager, {
            rds: { configSource: { ads: {}, resourceApiVersion: "V3" }, routeConfigName: "echo-route" },
            httpFilters: [{ name: "router", typedConfig: typeRegistry.pack(TypeUrl.router, {}) }],
          }),
        },
      });
      cache.set(TypeUrl.routeConfiguration, "echo-route", {
        name: "echo-route",
        virtualHosts: [
          {
            name: "echo",
            domains: ["*"],
            routes: [{ match: { prefix: "" }, route: { cluster: "echo-cluster" } }],
          },
        ],
      });
      cache.set(TypeUrl.cluster, "echo-cluster", {
        name: "echo-cluster",
        type: "EDS",
        edsClusterConfig: { edsConfig: { ads: {}, resourceApiVersion: "V3" } },
        lbPolicy: "ROUND_ROBIN",
      });
      cache.set(TypeUrl.clusterLoadAssignment, "echo-cluster", endpoints(a.port));
    });
    const port = await xds.listen();
    const bootstrap = {
      xds_servers: [
        {
          server_uri: `127.0.0.1:${port}`,
          channel_creds: [{ type: "insecure" }],
          server_features: ["xds_v3"],
        },
      ],
      node: { id: "grpc-app~127.0.0.1~app.default~default.svc.cluster.local", locality: {} },
    };
    app = spawn(process.execPath, [join(here, "fixtures", "proxyless-app.mjs"), "xds:///echo.test:8080"], {
      env: { ...process.env, GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const rl = createInterface({ input: app.stdout! });
    rl.on("line", (line) => {
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    });
  });

  after(async () => {
    if (app && app.exitCode === null) {
      app.kill();
      await once(app, "exit");
    }
    await xds.close();
    a.server.forceShutdown();
    b.server.forceShutdown();
  });

  const waitFor = (match: (l: string) => boolean) =>
    new Promise<void>((resolve) => {
      if (lines.some(match)) resolve();
      else waiters.push({ match, resolve });
    });

  it("resolves xds:/// through our LDS/RDS/CDS/EDS and reaches backend A", { timeout: 30_000 }, async () => {
    await waitFor((l) => l === "backend A");
    const stream = xds.streams()[0];
    assert.equal(stream?.protocol, "sotw");
    assert.equal(stream?.node?.id, "grpc-app~127.0.0.1~app.default~default.svc.cluster.local");
    const subs = xds.subscriptions(stream!.id);
    assert.deepEqual(subs?.get(TypeUrl.listener)?.names, ["echo.test:8080"]);
    assert.deepEqual(subs?.get(TypeUrl.clusterLoadAssignment)?.names, ["echo-cluster"]);
    assert.equal(stream?.nacks.length, 0);
  });

  it(
    "moves traffic to backend B when the endpoints change, without a restart",
    { timeout: 30_000 },
    async () => {
      xds.cache.set(TypeUrl.clusterLoadAssignment, "echo-cluster", endpoints(b.port));
      lines.length = 0;
      await waitFor((l) => l === "backend B");
      const from = lines.indexOf("backend B");
      // Once moved, every later call lands on B.
      await waitFor((l) => lines.length > from + 5 && l === "backend B");
      assert.ok(lines.slice(from).every((l) => l === "backend B"));
      assert.equal(xds.streams()[0]?.nacks.length, 0);
    },
  );
  it(
    "records the client's NACK of an unsupported Cluster while traffic keeps flowing",
    { timeout: 30_000 },
    async () => {
      const nacked = new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          if (nacks.length > 0) {
            clearInterval(timer);
            resolve();
          }
        }, 20);
      });
      xds.cache.set(TypeUrl.cluster, "echo-cluster", {
        name: "echo-cluster",
        type: "EDS",
        edsClusterConfig: { edsConfig: { ads: {}, resourceApiVersion: "V3" } },
        lbPolicy: "MAGLEV",
      });
      await nacked;
      assert.equal(nacks[0]?.typeUrl, TypeUrl.cluster);
      assert.match(nacks[0]?.errorDetail.message ?? "", /lb_policy/);
      assert.equal(xds.streams()[0]?.nacks[0]?.typeUrl, TypeUrl.cluster);
      lines.length = 0;
      await waitFor((l) => lines.length > 3 && l === "backend B");
      assert.ok(lines.every((l) => l === "backend B"));
    },
  );
});
