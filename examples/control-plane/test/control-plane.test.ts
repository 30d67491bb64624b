import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateKeyPair, SpiffeError, TrustBundle, verifySvid } from "@ambient/spiffe";
import { createCertificateServiceClient, createCsr } from "@ambient/spiffe/ca";
import { createPromClientSink } from "@ambient/telemetry";
import {
  createXdsClient,
  type Service,
  TypeUrl,
  type Workload,
  type XdsChangeEvent,
  type XdsClient,
  XdsError,
} from "@ambient/xds";
import * as prom from "prom-client";
import {
  type ControlPlane,
  ControlPlaneError,
  type ControlPlaneOptions,
  controlPlaneChannel,
  DEFAULT_GRPC_SERVER_OPTIONS,
  startControlPlane,
} from "../src/index.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
const ECHO_0 = "Kubernetes//Pod/demo/echo-0";
const ECHO_SVC = "demo/echo.demo.svc.cluster.local";

function nodeId(node: string, ip: string): string {
  return `ztunnel~${ip}~ztunnel-${node}.istio-system~istio-system.svc.cluster.local`;
}

/** Resolves with the first change event that satisfies `match`. */
function nextChange(client: XdsClient, match: (e: XdsChangeEvent) => boolean): Promise<XdsChangeEvent> {
  return new Promise((resolvePromise) => {
    const off = client.onChange((event) => {
      if (!match(event)) return;
      off();
      resolvePromise(event);
    });
  });
}

describe("control plane end to end", { timeout: 30_000 }, () => {
  let dir: string;
  let meshDir: string;
  let stateDir: string;
  let controlPlane: ControlPlane;
  const registry = new prom.Registry();
  const clients: XdsClient[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-"));
    meshDir = join(dir, "mesh");
    stateDir = join(dir, "state");
    // The echo part of the demo mesh; the waypoint part is covered by demo-mesh.test.ts.
    await cp(DEMO_MESH, meshDir, {
      recursive: true,
      filter: (src) => !/(web|waypoint)\.yaml$/.test(src),
    });
    controlPlane = await startControlPlane({
      meshDir,
      stateDir,
      listen: "127.0.0.1:0",
      admin: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      watchDebounceMs: 20,
      xdsDebounceMs: 5,
      metrics: createPromClientSink(prom, registry),
      metricsText: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function connect(node: string, token: string | undefined): Promise<XdsClient> {
    const client = createXdsClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      node: { id: nodeId(node, "127.20.0.1"), metadata: { NODE_NAME: node } },
      ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }),
      initialBackoffMs: 50,
      maxBackoffMs: 200,
    });
    clients.push(client);
    client.watch(TypeUrl.address);
    client.watch(TypeUrl.authorization);
    return client;
  }

  it("writes the trust bundle and node tokens to the state directory", async () => {
    const root = await readFile(join(stateDir, "root-cert.pem"), "utf8");
    assert.equal(root, controlPlane.rootCertPem);
    for (const node of ["node-a", "node-b", "node-c"]) {
      assert.ok(existsSync(join(stateDir, "tokens", `${node}.jwt`)), node);
    }
    const token = (await readFile(join(stateDir, "tokens", "node-a.jwt"), "utf8")).trim();
    const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
    assert.equal(claims.iss, "ambient-control-plane");
    assert.deepEqual(claims.aud, ["istio-ca"]);
    assert.equal(claims.sub, "system:serviceaccount:istio-system:ztunnel");
    assert.deepEqual(claims["kubernetes.io"].node, { name: "node-a" });
    assert.equal(claims.exp - claims.iat, 24 * 60 * 60);
  });

  it("serves workloads, services and authorizations over Delta xDS with TLS and a node token", async () => {
    const client = await connect("node-a", await controlPlane.tokenFor("node-a"));
    await client.ready();
    const echo = client.get(TypeUrl.address, ECHO_0)?.workload as Workload | undefined;
    assert.ok(echo);
    assert.deepEqual([...(echo.addresses[0] ?? [])], [127, 10, 0, 3]);
    assert.equal(echo.tunnelProtocol, "HBONE");
    assert.equal(echo.serviceAccount, "echo");
    assert.equal(echo.node, "node-b");
    assert.equal(echo.trustDomain, "");
    assert.deepEqual(echo.services[ECHO_SVC]?.ports, [
      { servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" },
    ]);
    assert.deepEqual(echo.authorizationPolicies, [
      "demo/echo-allow-sleep",
      "istio-system/istio_converted_static_strict",
    ]);
    const svc = client.get(TypeUrl.address, ECHO_SVC)?.service as Service | undefined;
    assert.ok(svc);
    assert.deepEqual([...(svc.addresses[0]?.address ?? [])], [127, 30, 0, 1]);
    assert.deepEqual(
      [...client.resources(TypeUrl.address).keys()].sort(),
      [
        ECHO_0,
        "Kubernetes//Pod/demo/echo-1",
        "Kubernetes//Pod/demo/sleep-0",
        "Kubernetes//Pod/demo/stranger",
        ECHO_SVC,
      ].sort(),
    );
    const policy = client.get(TypeUrl.authorization, "demo/echo-allow-sleep");
    assert.equal(policy?.action, "ALLOW");
    assert.equal(policy?.scope, "WORKLOAD_SELECTOR");
    assert.deepEqual(policy?.groups[0]?.rules[1]?.matches[0]?.principals, [
      { exact: "cluster.local/ns/demo/sa/sleep" },
    ]);
  });

  it("pushes only what changed when a manifest is edited, added or removed", async () => {
    const client = await connect("node-b", await controlPlane.tokenFor("node-b"));
    await client.ready();
    // Relabel echo-1 to v2: exactly that workload is updated.
    const echoYaml = await readFile(join(meshDir, "echo.yaml"), "utf8");
    const edited = echoYaml.replace(
      /name: echo-1\n(\s+)namespace: demo\n(\s+)labels: \{ app: echo, version: v1 \}/,
      (m) => m.replace("version: v1", "version: v2"),
    );
    assert.notEqual(edited, echoYaml);
    const updated = nextChange(client, (e) => e.typeUrl === TypeUrl.address);
    // Written beside the directory and renamed in, as editors do, so no reload sees half a file.
    await writeFile(join(dir, "echo.yaml.new"), edited);
    await rename(join(dir, "echo.yaml.new"), join(meshDir, "echo.yaml"));
    const event = await updated;
    assert.deepEqual(
      event.updated.map((r) => r.name),
      ["Kubernetes//Pod/demo/echo-1"],
    );
    assert.deepEqual([event.added, event.removed], [[], []]);
    assert.equal(
      (client.get(TypeUrl.address, "Kubernetes//Pod/demo/echo-1")?.workload as Workload).canonicalRevision,
      "v2",
    );

    // Removing the policy file removes both authorizations and updates the workloads that named them.
    const authzGone = nextChange(client, (e) => e.typeUrl === TypeUrl.authorization);
    await unlink(join(meshDir, "policy.yaml"));
    const removed = await authzGone;
    assert.deepEqual(removed.removed.sort(), [
      "demo/echo-allow-sleep",
      "istio-system/istio_converted_static_strict",
    ]);
    const result = await controlPlane.reload();
    assert.deepEqual([result.changed, result.removed], [0, 0]);
  });

  it("refuses an xDS stream without a valid token", async () => {
    for (const token of [undefined, "not-a-jwt"]) {
      const client = await connect("node-a", token);
      const error = await new Promise<XdsError | undefined>((resolvePromise) => {
        client.onConnection((connected, err) => {
          if (!connected && err) resolvePromise(err);
        });
      });
      assert.ok(error instanceof XdsError);
      assert.equal(error.code, "ERR_XDS_UNAUTHENTICATED");
      assert.equal(client.resources(TypeUrl.address).size, 0);
      client.close();
    }
  });

  it("keeps serving the rest when a manifest is broken", async () => {
    await writeFile(join(meshDir, "zz-broken.yaml"), "kind: Pod\nmetadata: {}\n---\nkind: [\n");
    try {
      const result = await controlPlane.reload();
      assert.deepEqual(
        result.errors.map((e) => [e.file, e.document]),
        [
          ["zz-broken.yaml", 0],
          ["zz-broken.yaml", 1],
        ],
      );
      assert.equal(result.workloads, 4);
      assert.equal(result.changed, 0);
    } finally {
      await unlink(join(meshDir, "zz-broken.yaml"));
    }
  });

  it("serves the same resources on the plaintext debug port without a token", async () => {
    assert.ok(controlPlane.plaintextAddress);
    const client = createXdsClient({
      address: controlPlane.plaintextAddress,
      node: { id: nodeId("node-c", "127.20.0.3") },
    });
    clients.push(client);
    client.watch(TypeUrl.address);
    await client.ready();
    assert.ok(client.get(TypeUrl.address, "Kubernetes//Pod/demo/sleep-0")?.workload);
  });

  it("serves /debug/config and /metrics on the admin port", async () => {
    const config = (await (await fetch(`http://${controlPlane.adminAddress}/debug/config`)).json()) as {
      workloads: { name: string; addresses: string[] }[];
      nodes: Record<string, string[]>;
    };
    assert.ok(config.workloads.some((w) => w.name === "sleep-0" && w.addresses[0] === "127.10.0.2"));
    assert.deepEqual(config.nodes["node-a"], [
      "spiffe://cluster.local/ns/demo/sa/sleep",
      "spiffe://cluster.local/ns/demo/sa/stranger",
    ]);
    const metrics = await (await fetch(`http://${controlPlane.adminAddress}/metrics`)).text();
    assert.match(metrics, /ambient_control_plane_reloads_total\{result="ok"\} [1-9]/);
    assert.match(metrics, /pilot_xds_pushes/);
    assert.equal((await fetch(`http://${controlPlane.adminAddress}/nope`)).status, 404);
  });

  it("answers the debug paths only to Hosts that are IP literals or localhost (DNS rebinding)", async () => {
    const port = Number(controlPlane.adminAddress?.split(":").pop());
    const get = (path: string, host: string) =>
      new Promise<number>((done, reject) => {
        const req = httpRequest({ host: "127.0.0.1", port, path, headers: { host } }, (res) => {
          res.resume();
          res.on("end", () => done(res.statusCode ?? 0));
        });
        req.on("error", reject);
        req.end();
      });
    for (const path of ["/debug/config", "/dashboard", "/dashboard/data"]) {
      assert.equal(await get(path, `rebind.example.com:${port}`), 403, path);
      assert.equal(await get(path, `localhost:${port}`), 200, path);
      assert.equal(await get(path, `127.0.0.1:${port}`), 200, path);
    }
    // Probes and Prometheus address the pod by any name.
    assert.equal(await get("/ready", "istiod.istio-system.svc:15014"), 200);
    assert.equal(await get("/metrics", "istiod.istio-system.svc:15014"), 200);
  });
});

describe("control plane static STRICT policy", { timeout: 30_000 }, () => {
  const STRICT_KEY = "istio-system/istio_converted_static_strict";
  let dir: string;
  let controlPlane: ControlPlane;
  let client: XdsClient | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-strict-"));
    // A STRICT namespace without pods yet.
    await cp(join(DEMO_MESH, "namespace.yaml"), join(dir, "namespace.yaml"));
    await cp(join(DEMO_MESH, "policy.yaml"), join(dir, "policy.yaml"));
    controlPlane = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      watch: false,
      xdsDebounceMs: 5,
    });
  });

  after(async () => {
    client?.close();
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("a client holds the policy before any Workload that lists it arrives", async () => {
    const c = createXdsClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      node: { id: nodeId("node-b", "127.20.0.2"), metadata: { NODE_NAME: "node-b" } },
      headers: { authorization: `Bearer ${await controlPlane.tokenFor("node-b")}` },
    });
    client = c;
    c.watch(TypeUrl.address);
    c.watch(TypeUrl.authorization);
    await c.ready();
    // A ztunnel skips a listed policy it does not hold: a STRICT workload seen before the policy
    // would take plaintext until the policy came.
    const unguarded: string[] = [];
    c.onChange((event) => {
      if (event.typeUrl !== TypeUrl.address) return;
      for (const r of [...event.added, ...event.updated]) {
        const w = (r.resource as { workload?: Workload }).workload;
        const held = c.get(TypeUrl.authorization, STRICT_KEY) !== undefined;
        if (w?.authorizationPolicies.includes(STRICT_KEY) && !held) unguarded.push(r.name);
      }
    });
    const arrived = nextChange(
      c,
      (e) => e.typeUrl === TypeUrl.address && e.added.some((r) => r.name === ECHO_0),
    );
    // The first pod of the STRICT namespace.
    const echo = await readFile(join(DEMO_MESH, "echo.yaml"), "utf8");
    await writeFile(join(dir, "echo.yaml"), echo);
    await controlPlane.reload();
    const event = await arrived;
    const listed = event.added.find((r) => r.name === ECHO_0)?.resource as { workload?: Workload };
    assert.ok(listed.workload?.authorizationPolicies.includes(STRICT_KEY));
    assert.deepEqual(unguarded, []);
  });
});

describe("control plane CA", { timeout: 30_000 }, () => {
  let dir: string;
  let controlPlane: ControlPlane;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-ca-"));
    await cp(DEMO_MESH, dir, { recursive: true });
    controlPlane = await startControlPlane({ meshDir: dir, listen: "127.0.0.1:0", watch: false });
  });

  after(async () => {
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function requestSvid(node: string, identity: string, token?: string): Promise<string[]> {
    const client = createCertificateServiceClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      token: token ?? (await controlPlane.tokenFor(node)),
    });
    try {
      const keys = await generateKeyPair();
      const csr = await createCsr({ spiffeId: identity, privateKeyPem: keys.privateKeyPem });
      return await client.createCertificate(csr, { impersonatedIdentity: identity });
    } finally {
      client.close();
    }
  }

  it("issues an SVID for a pod on the caller's node through impersonation", async () => {
    const chain = await requestSvid("node-a", "spiffe://cluster.local/ns/demo/sa/sleep");
    const bundle = TrustBundle.fromPem("cluster.local", controlPlane.rootCertPem);
    assert.equal(verifySvid(chain, bundle).toString(), "spiffe://cluster.local/ns/demo/sa/sleep");
  });

  const refusals: [string, string, string | undefined][] = [
    ["a pod on another node", "node-a", undefined],
    ["a node with no pods", "node-c", undefined],
    ["a forged token", "node-b", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"],
  ];
  for (const [name, node, token] of refusals) {
    it(`refuses ${name}`, async () => {
      await assert.rejects(
        requestSvid(node, "spiffe://cluster.local/ns/demo/sa/echo", token),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError);
          assert.equal(err.code, "ERR_UNAUTHENTICATED");
          return true;
        },
      );
    });
  }

  it("issues for echo to node-b", async () => {
    const chain = await requestSvid("node-b", "spiffe://cluster.local/ns/demo/sa/echo");
    assert.ok(chain.length >= 2);
  });

  it("certifies the impersonated identity, not the SAN the CSR carries", async () => {
    const client = createCertificateServiceClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      token: await controlPlane.tokenFor("node-b"),
    });
    try {
      const keys = await generateKeyPair();
      // A CSR left over from an older trust domain: the certificate is for the identity decided by the
      // control plane all the same, and names nothing else.
      const csr = await createCsr({
        spiffeId: "spiffe://old.example/ns/demo/sa/echo",
        privateKeyPem: keys.privateKeyPem,
      });
      const identity = "spiffe://cluster.local/ns/demo/sa/echo";
      const chain = await client.createCertificate(csr, { impersonatedIdentity: identity });
      assert.equal(new X509Certificate(chain[0] as string).subjectAltName, `URI:${identity}`);
    } finally {
      client.close();
    }
  });

  it("refuses a caller that names a cluster other than its own, and serves its own cluster", async () => {
    const ask = async (clusterId: string): Promise<string[]> => {
      const client = createCertificateServiceClient({
        address: controlPlane.address,
        ...controlPlaneChannel(controlPlane.rootCertPem),
        token: await controlPlane.tokenFor("node-b"),
        clusterId,
      });
      try {
        const keys = await generateKeyPair();
        const identity = "spiffe://cluster.local/ns/demo/sa/echo";
        const csr = await createCsr({ spiffeId: identity, privateKeyPem: keys.privateKeyPem });
        return await client.createCertificate(csr, { impersonatedIdentity: identity });
      } finally {
        client.close();
      }
    };
    await assert.rejects(ask("cluster-east"), (err: unknown) => {
      assert.ok(err instanceof SpiffeError);
      assert.equal(err.code, "ERR_UNAUTHENTICATED");
      // The reason (which cluster this one is) goes to the log, not to the caller.
      assert.doesNotMatch(err.message, /cluster/);
      return true;
    });
    assert.ok((await ask("Kubernetes")).length >= 2);
  });
});

describe("control plane state directory", { timeout: 30_000 }, () => {
  it("keeps the CA and token key across restarts", async () => {
    const dir = await mkdtemp(join(tmpdir(), "control-plane-state-"));
    try {
      const meshDir = join(dir, "mesh");
      // The echo part of the demo mesh; the waypoint part is covered by demo-mesh.test.ts.
      await cp(DEMO_MESH, meshDir, {
        recursive: true,
        filter: (src) => !/(web|waypoint)\.yaml$/.test(src),
      });
      const options = {
        meshDir,
        stateDir: join(dir, "state"),
        listen: "127.0.0.1:0",
        watch: false,
        extraNodes: [],
      };
      const first = await startControlPlane(options);
      const token = await first.tokenFor("node-a");
      const root = first.rootCertPem;
      await first.close();
      assert.ok(!existsSync(join(dir, "state", "tokens", "node-c.jwt")));
      assert.ok(existsSync(join(dir, "state", "tokens", "node-a.jwt")));
      const second = await startControlPlane(options);
      try {
        assert.equal(second.rootCertPem, root);
        const client = createCertificateServiceClient({
          address: second.address,
          ...controlPlaneChannel(second.rootCertPem),
          token,
        });
        try {
          const keys = await generateKeyPair();
          const id = "spiffe://cluster.local/ns/demo/sa/stranger";
          const csr = await createCsr({ spiffeId: id, privateKeyPem: keys.privateKeyPem });
          const chain = await client.createCertificate(csr, { impersonatedIdentity: id });
          assert.equal(chain.at(-1), root);
        } finally {
          client.close();
        }
      } finally {
        await second.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a missing mesh directory with a typed error", async () => {
    await assert.rejects(
      startControlPlane({
        meshDir: join(tmpdir(), "no-such-mesh-dir-for-control-plane"),
        listen: "127.0.0.1:0",
      }),
      (err: unknown) => err instanceof ControlPlaneError && err.code === "ERR_CONTROL_PLANE_CONFIG",
    );
    await assert.rejects(
      startControlPlane({ meshDir: DEMO_MESH, listen: "nowhere" }),
      (err: unknown) => err instanceof ControlPlaneError && err.code === "ERR_CONTROL_PLANE_CONFIG",
    );
  });

  it("refuses a trust domain or a cluster DNS domain that is not one, naming the option", async () => {
    const bad: [Partial<ControlPlaneOptions>, string][] = [
      [{ trustDomain: "" }, "trustDomain"],
      [{ trustDomain: "Example.org" }, "trustDomain"],
      [{ trustDomain: "example.org/ns" }, "trustDomain"],
      [{ domainSuffix: "" }, "domainSuffix"],
      [{ domainSuffix: "corp.internal." }, "domainSuffix"],
      [{ domainSuffix: "Corp.Internal" }, "domainSuffix"],
      [{ domainSuffix: `${"a".repeat(64)}.local` }, "domainSuffix"],
    ];
    for (const [options, name] of bad) {
      await assert.rejects(
        startControlPlane({ meshDir: DEMO_MESH, listen: "127.0.0.1:0", ...options }),
        (err: unknown) =>
          err instanceof ControlPlaneError &&
          err.code === "ERR_CONTROL_PLANE_CONFIG" &&
          err.message.startsWith(`${name}: `),
        JSON.stringify(options),
      );
    }
  });

  it("refuses trusted node accounts that are not namespace/serviceaccount", async () => {
    for (const account of ["ztunnel", "istio-system/ztunnel/x", "istio-system/", "Istio-System/ztunnel"]) {
      await assert.rejects(
        startControlPlane({ meshDir: DEMO_MESH, listen: "127.0.0.1:0", trustedNodeAccounts: [account] }),
        (err: unknown) =>
          err instanceof ControlPlaneError &&
          err.code === "ERR_CONTROL_PLANE_CONFIG" &&
          err.message.includes(JSON.stringify(account)),
        account,
      );
    }
  });
});

describe("control plane gRPC connections", { timeout: 30_000 }, () => {
  it("keep istiod's keepalive and end after 30 min by default", () => {
    assert.deepEqual(DEFAULT_GRPC_SERVER_OPTIONS, {
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.max_connection_age_ms": 1_800_000,
      "grpc.max_connection_age_grace_ms": 10_000,
    });
  });

  it("end at their maximum age on the TLS and the plaintext port, and the clients come back", async () => {
    const dir = await mkdtemp(join(tmpdir(), "control-plane-age-"));
    const meshDir = join(dir, "mesh");
    await cp(DEMO_MESH, meshDir, { recursive: true, filter: (src) => !/(web|waypoint)\.yaml$/.test(src) });
    const controlPlane = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      watch: false,
      grpcServerOptions: { "grpc.max_connection_age_ms": 400, "grpc.max_connection_age_grace_ms": 200 },
    });
    const clients: XdsClient[] = [];
    try {
      const common = { initialBackoffMs: 10, maxBackoffMs: 100 };
      clients.push(
        createXdsClient({
          address: controlPlane.address,
          ...controlPlaneChannel(controlPlane.rootCertPem),
          ...common,
          node: { id: nodeId("node-a", "127.20.0.1"), metadata: { NODE_NAME: "node-a" } },
          headers: { authorization: `Bearer ${await controlPlane.tokenFor("node-a")}` },
        }),
        createXdsClient({
          address: controlPlane.plaintextAddress as string,
          ...common,
          node: { id: nodeId("node-b", "127.20.0.2") },
        }),
      );
      const ends = clients.map(() => 0);
      clients.forEach((c, i) => {
        c.onStreamEnd(() => {
          ends[i] = (ends[i] ?? 0) + 1;
        });
        c.watch(TypeUrl.address);
      });
      await Promise.all(clients.map((c) => c.ready()));
      const started = Date.now();
      while (ends.some((n) => n < 2)) {
        assert.ok(Date.now() - started < 10_000, `streams ended ${ends.join(" and ")} times in 10 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
      // Each came back, and is served again.
      for (const c of clients) {
        await new Promise<void>((resolveUp) => {
          const off = c.onConnection((up) => {
            if (!up) return;
            off();
            resolveUp();
          });
        });
        assert.ok(c.get(TypeUrl.address, ECHO_0) !== undefined);
      }
    } finally {
      for (const c of clients) c.close();
      await controlPlane.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
