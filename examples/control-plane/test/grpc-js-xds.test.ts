// Proxyless gRPC through the control plane: @grpc/grpc-js-xds, unmodified, in a child process reads
// LDS/RDS/CDS/EDS generated from the mesh manifests and calls real gRPC servers standing in for the
// pods on 127.10.60.x. A GRPCRoute weight split and header match are followed, and so is an edit.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { createPromClientSink } from "@ambient/telemetry";
import { createXdsClient, TypeUrl } from "@ambient/xds";
import * as grpc from "@grpc/grpc-js";
import * as prom from "prom-client";
import { type ControlPlane, startControlPlane } from "../src/index.js";

const HOST = "echo.demo.svc.cluster.local";
const TARGET = `xds:///${HOST}:80`;
/** Longest wait for an edit to reach the client: file watch, reload, push, and the client's switch. */
const EDIT_DEADLINE_MS = 10_000;

interface Backend {
  name: string;
  ip: string;
  port: number;
  server: grpc.Server;
}

async function startBackend(name: string, ip: string): Promise<Backend> {
  const server = new grpc.Server();
  const raw = (b: Buffer) => b;
  server.addService(
    {
      Who: {
        path: "/test.Echo/Who",
        requestStream: false,
        responseStream: false,
        requestSerialize: raw,
        requestDeserialize: raw,
        responseSerialize: raw,
        responseDeserialize: raw,
      },
    },
    {
      Who: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        callback(null, Buffer.from(name)),
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${ip}:0`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { name, ip, port, server };
}

const pod = (b: Backend, version: string, node: string, app = "echo") => `
---
apiVersion: v1
kind: Pod
metadata: { name: ${b.name}, namespace: demo, labels: { app: ${app}, version: ${version} } }
spec:
  nodeName: ${node}
  serviceAccountName: echo
  containers: [{ name: echo, ports: [{ name: grpc, containerPort: ${b.port} }] }]
status: { podIP: ${b.ip} }`;

const service = (name: string, selector: string, clusterIP: string) => `
---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: demo }
spec:
  clusterIP: ${clusterIP}
  selector: ${selector}
  ports: [{ name: grpc, port: 80, targetPort: grpc, appProtocol: grpc }]`;

/**
 * A GRPCRoute on the echo Service. Each version also sends calls with `x-probe: <version>` to the
 * probe Service, whose one pod no other Service selects: a call answered by that pod proves this
 * version is in force at the client. Answers alone cannot prove it otherwise, since the client's
 * load balancer may send a short run of calls to any subset of the echo pods.
 */
const route = (version: string, rules: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: echo, namespace: demo }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, port: 80 }]
  rules:
    - matches: [{ headers: [{ name: x-probe, value: ${version} }] }]
      backendRefs: [{ name: probe, port: 80 }]
${rules}
`;

const SPLIT_AND_HEADER = route(
  "split",
  `    - matches: [{ headers: [{ name: x-version, value: v2 }] }]
      backendRefs: [{ name: echo-v2, port: 80 }]
    - backendRefs: [{ name: echo-v1, port: 80, weight: 1 }, { name: echo-v2, port: 80, weight: 3 }]`,
);
const ALL_TO_V1 = route("all-to-v1", `    - backendRefs: [{ name: echo-v1, port: 80 }]`);

describe("@grpc/grpc-js-xds through the control plane", { timeout: 90_000 }, () => {
  let dir: string;
  let controlPlane: ControlPlane;
  let client: ChildProcess;
  const backends: Backend[] = [];
  const registry = new prom.Registry();
  const pending = new Map<number, (results: string[]) => void>();
  let nextId = 0;

  async function writeManifest(name: string, text: string): Promise<void> {
    const tmp = join(dir, `.${name}.tmp`);
    await writeFile(tmp, text);
    await rename(tmp, join(dir, name));
  }

  function calls(target: string, count: number, headers?: Record<string, string>): Promise<string[]> {
    const id = nextId++;
    return new Promise((resolve) => {
      pending.set(id, resolve);
      client.stdin?.write(`${JSON.stringify({ id, target, calls: count, headers })}\n`);
    });
  }

  /** Waits until the client routes by the GRPCRoute of this `version` (see `route`). */
  function inForce(version: string): Promise<number> {
    return until((r) => r.every((x) => x === "probe"), TARGET, { "x-probe": version });
  }

  /** Calls until `done` holds for a batch of answers; returns how long that took. */
  async function until(
    done: (results: string[]) => boolean,
    target = TARGET,
    headers?: Record<string, string>,
  ): Promise<number> {
    const start = Date.now();
    let last: string[] = [];
    while (Date.now() - start < EDIT_DEADLINE_MS) {
      last = await calls(target, 8, headers);
      if (done(last)) return Date.now() - start;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.fail(`not reached within ${EDIT_DEADLINE_MS} ms; last answers: ${last.join(", ")}`);
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "cp-grpc-xds-"));
    backends.push(
      await startBackend("echo-a", "127.10.60.1"),
      await startBackend("echo-b", "127.10.60.2"),
      await startBackend("echo-c", "127.10.60.3"),
      await startBackend("probe", "127.10.60.5"),
    );
    const [a, b, c, probe] = backends as [Backend, Backend, Backend, Backend];
    await writeManifest(
      "mesh.yaml",
      `apiVersion: v1
kind: Namespace
metadata: { name: demo }
---
apiVersion: v1
kind: Node
metadata: { name: node-a, labels: { topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1 } }
---
apiVersion: v1
kind: Node
metadata: { name: node-b, labels: { topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z2 } }
${pod(a, "v1", "node-a")}${pod(b, "v2", "node-b")}${pod(c, "v2", "node-b")}${pod(probe, "v1", "node-a", "probe")}
${service("echo", "{ app: echo }", "127.30.60.1")}${service("probe", "{ app: probe }", "None")}${service("echo-v1", "{ app: echo, version: v1 }", "None")}${service("echo-v2", "{ app: echo, version: v2 }", "None")}
`,
    );
    controlPlane = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      watchDebounceMs: 20,
      xdsDebounceMs: 10,
      metrics: createPromClientSink(prom, registry),
    });
    const bootstrap = {
      xds_servers: [
        {
          server_uri: controlPlane.plaintextAddress,
          channel_creds: [{ type: "insecure" }],
          server_features: ["xds_v3"],
        },
      ],
      node: {
        id: "sidecar~127.10.60.9~client.demo~demo.svc.cluster.local",
        locality: { region: "r1", zone: "z1" },
        metadata: { NAMESPACE: "demo", GENERATOR: "grpc" },
      },
    };
    client = spawn(process.execPath, [join(import.meta.dirname, "fixtures", "grpc-xds-client.mjs")], {
      env: { ...process.env, GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap) },
      stdio: ["pipe", "pipe", "inherit"],
    });
    createInterface({ input: client.stdout! }).on("line", (line) => {
      const { id, results } = JSON.parse(line) as { id: number; results: string[] };
      pending.get(id)?.(results);
      pending.delete(id);
    });
  });

  after(async () => {
    if (client !== undefined && client.exitCode === null) {
      client.stdin?.end();
      const exited = once(client, "exit");
      const timer = setTimeout(() => client.kill(), 3000);
      await exited;
      clearTimeout(timer);
    }
    await controlPlane?.close();
    for (const b of backends) b.server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  it("reaches the Service's pods, and only the v1 pod through echo-v1", async () => {
    // The client spreads calls over the pods it has connected to so far, one or all: every answer
    // is kept until each expected pod has answered, and all of them must be from the expected pods.
    const answers = async (target: string, pods: number): Promise<Set<string>> => {
      const seen: string[] = [];
      await until((r) => {
        seen.push(...r);
        return new Set(seen).size >= pods;
      }, target);
      return new Set(seen);
    };
    assert.deepEqual(await answers(TARGET, 3), new Set(["echo-a", "echo-b", "echo-c"]));
    const v1 = await calls(`xds:///echo-v1.demo.svc.cluster.local:80`, 10);
    assert.deepEqual(new Set(v1), new Set(["echo-a"]));
    assert.deepEqual(
      await answers(`xds:///echo-v2.demo.svc.cluster.local:80`, 2),
      new Set(["echo-b", "echo-c"]),
    );
  });

  it("follows a GRPCRoute's header match and its 1:3 weight split", async () => {
    await writeManifest("route.yaml", SPLIT_AND_HEADER);
    await inForce("split");
    const withHeader = await calls(TARGET, 40, { "x-version": "v2" });
    assert.ok(
      withHeader.every((x) => x === "echo-b" || x === "echo-c"),
      withHeader.join(","),
    );
    const plain = await calls(TARGET, 400);
    assert.ok(
      plain.every((x) => x.startsWith("echo-")),
      plain.join(","),
    );
    const v1Share = plain.filter((x) => x === "echo-a").length / plain.length;
    // Expected 0.25; the bounds are over six standard deviations of a binomial(400, 0.25) away.
    assert.ok(v1Share > 0.12 && v1Share < 0.38, `share of v1: ${v1Share}`);
  });

  it("follows an edit of the route live", async () => {
    await writeManifest("route.yaml", ALL_TO_V1);
    await inForce("all-to-v1");
    const after = await calls(TARGET, 40, { "x-version": "v2" });
    assert.deepEqual(new Set(after), new Set(["echo-a"]));
  });

  it("follows a pod moving to another address (an endpoint-only push)", async () => {
    const [a] = backends as [Backend];
    const moved = await startBackend("echo-a-moved", "127.10.60.4");
    backends.push(moved);
    const before = controlPlane.envoyConfig();
    await writeManifest(
      "mesh.yaml",
      (await readFile(join(dir, "mesh.yaml"), "utf8"))
        .replace(`podIP: ${a.ip}`, `podIP: ${moved.ip}`)
        .replace(`containerPort: ${a.port}`, `containerPort: ${moved.port}`),
    );
    await until((r) => r.every((x) => x === "echo-a-moved"));
    const afterConfig = controlPlane.envoyConfig();
    assert.deepEqual(afterConfig.routeConfigurations, before.routeConfigurations);
    assert.deepEqual(afterConfig.clusters, before.clusters);
    assert.notDeepEqual(afterConfig.clusterLoadAssignments, before.clusterLoadAssignments);
  });

  it("serves the same Envoy resources over Delta xDS", async () => {
    const delta = createXdsClient({
      address: controlPlane.plaintextAddress as string,
      node: { id: "sidecar~127.10.60.8~delta.demo~demo.svc.cluster.local" },
      protocol: "delta",
    });
    try {
      delta.watch(TypeUrl.listener);
      delta.watch(TypeUrl.routeConfiguration, { names: [`${HOST}:80`] });
      delta.watch(TypeUrl.clusterLoadAssignment, { names: [`outbound|80||${HOST}`] });
      await delta.ready();
      const served = controlPlane.envoyConfig();
      assert.deepEqual([...delta.resources(TypeUrl.listener).keys()].sort(), [...served.listeners.keys()]);
      const routes = delta.get(TypeUrl.routeConfiguration, `${HOST}:80`);
      assert.deepEqual(
        routes?.virtualHosts[0]?.routes.map((r) => r.route?.cluster),
        ["outbound|80||probe.demo.svc.cluster.local", "outbound|80||echo-v1.demo.svc.cluster.local"],
      );
      const endpoints = delta.get(TypeUrl.clusterLoadAssignment, `outbound|80||${HOST}`);
      const addresses = endpoints?.endpoints.flatMap((e) =>
        e.lbEndpoints.map((l) => l.endpoint?.address?.socketAddress?.address),
      );
      assert.deepEqual(addresses?.sort(), ["127.10.60.2", "127.10.60.3", "127.10.60.4"]);
    } finally {
      delta.close();
    }
  });

  it("got no NACK from the client for anything it was sent", async () => {
    const rejects = (await registry.getSingleMetric("pilot_total_xds_rejects")?.get())?.values ?? [];
    assert.deepEqual(
      rejects.filter((v) => v.value > 0),
      [],
    );
    const pushes = (await registry.getSingleMetric("pilot_xds_pushes")?.get())?.values ?? [];
    assert.ok(pushes.some((v) => v.value > 0));
  });
});
