// What a cluster is set up with that its proxies must be told as well as its control plane. A control
// plane serves the callers of its own cluster only, and a proxy told nothing says it is in
// `Kubernetes`: the ztunnel and the waypoint programs, told their cluster (`--cluster-id`, else the
// variable their Istio counterparts read), get their certificates and config from a control plane of
// cluster1, and a request goes through both. A mesh with another trust domain (every identity, the
// control plane's too, is spiffe://example.org/...) and a cluster with another DNS domain (Services
// are <name>.<namespace>.svc.corp.internal) work the same once the proxies are told
// (`--trust-domain`, `--cluster-domain`, else TRUST_DOMAIN and CLUSTER_DOMAIN).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type ControlPlane,
  type ControlPlaneOptions,
  startControlPlane,
} from "@ambient/example-control-plane";
import {
  httpOverSocks,
  loopbackSubnet,
  shopPod,
  shopServiceOnWaypoint,
  shopWithWaypoint,
  waitFor,
} from "./mesh-fixture.js";

const WAYPOINT_MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const ZTUNNEL_MAIN = join(dirname(fileURLToPath(import.meta.resolve("@ambient/example-ztunnel"))), "main.ts");

/** A running program and everything it wrote. */
interface Program {
  child: ChildProcess;
  out(): string;
}

/** Starts `main` under tsx with the test run's environment less the variables tested here, plus `env`. */
function startProgram(main: string, args: string[], env: Record<string, string>): Program {
  const {
    CLUSTER_ID: _a,
    ISTIO_META_CLUSTER_ID: _b,
    TRUST_DOMAIN: _c,
    CLUSTER_DOMAIN: _d,
    ISTIO_META_HTTP10: _e,
    PILOT_HTTP10: _f,
    ...rest
  } = process.env;
  const child = spawn(process.execPath, ["--import", "tsx", main, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...rest, ...env },
  });
  let out = "";
  child.stdout?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on("data", (c: Buffer) => {
    out += c.toString();
  });
  return { child, out: () => out };
}

async function stopProgram(program: Program): Promise<void> {
  const { child } = program;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}

/** Waits for `line` in the program's output; fails with the output when it exits or 30 s pass first. */
async function waitForLine(program: Program, line: string): Promise<void> {
  await waitFor(() => program.out().includes(line) || program.child.exitCode !== null, 30_000).catch(
    () => {},
  );
  assert.ok(program.out().includes(line), `no "${line}":\n${program.out()}`);
}

interface ProgramOptions {
  /** What the control plane is started with besides the mesh folder. Default: cluster1. */
  controlPlane?: Partial<ControlPlaneOptions>;
  /** More manifests for the mesh folder. */
  manifests?: string;
  /** Called once both programs are ready, before `check`. */
  onReady?: (programs: { ztunnel: Program; waypoint: Program }) => void;
  /** Extra flags and environment of each program. */
  ztunnel: { args: string[]; env: Record<string, string> };
  waypoint: { args: string[]; env: Record<string, string> };
}

/**
 * A control plane (of cluster1, unless `options.controlPlane` says otherwise) serving the shop
 * namespace (a client pod and an api pod on node-a, the api Service bound to the waypoint), node-a's
 * ztunnel and the waypoint run as programs; `check` runs once both are ready, with the SOCKS5 route
 * of the client pod to the api Service.
 */
async function withMesh(
  options: ProgramOptions,
  check: (route: { proxy: string; from: string; to: string }) => Promise<void>,
): Promise<void> {
  const { cidr, ip } = loopbackSubnet();
  const dir = mkdtempSync(join(tmpdir(), "waypoint-cluster-id-"));
  const meshDir = join(dir, "mesh");
  mkdirSync(meshDir);
  writeFileSync(
    join(meshDir, "mesh.yaml"),
    `${shopWithWaypoint(ip(6))}
---
${shopPod({ name: "client", app: "client", node: "node-a", ip: ip(2) })}
---
${shopPod({ name: "api-0", app: "api", node: "node-a", ip: ip(7) })}
---
${shopServiceOnWaypoint({ name: "api", clusterIp: ip(100), appProtocol: "http" })}
${options.manifests === undefined ? "" : `---\n${options.manifests}\n`}`,
  );
  let cp: ControlPlane | undefined;
  let backend: Server | undefined;
  const programs: Program[] = [];
  try {
    cp = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      watch: false,
      podCidrs: [cidr],
      ...(options.controlPlane ?? { clusterId: "cluster1" }),
    });
    backend = createServer((_req, res) => res.end("api in the mesh"));
    backend.listen(8080, ip(7));
    await once(backend, "listening");
    writeFileSync(join(dir, "root-cert.pem"), cp.rootCertPem);
    writeFileSync(join(dir, "node-a.jwt"), await cp.tokenFor("node-a"));
    const common = [
      "--node",
      "node-a",
      "--control-plane",
      cp.address,
      "--root-cert",
      join(dir, "root-cert.pem"),
      "--token-file",
      join(dir, "node-a.jwt"),
    ];
    const ztunnel = startProgram(
      ZTUNNEL_MAIN,
      [...common, "--node-ip", ip(1), ...options.ztunnel.args],
      options.ztunnel.env,
    );
    programs.push(ztunnel);
    const waypoint = startProgram(
      WAYPOINT_MAIN,
      [...common, "--name", "waypoint", "--namespace", "shop", "--ip", ip(6), ...options.waypoint.args],
      options.waypoint.env,
    );
    programs.push(waypoint);
    await Promise.all([
      waitForLine(ztunnel, "ready: point SOCKS5 clients here"),
      waitForLine(waypoint, "waypoint ready"),
    ]);
    options.onReady?.({ ztunnel, waypoint });
    await check({ proxy: `${ip(1)}:15080`, from: ip(2), to: `${ip(100)}:80` });
  } finally {
    await Promise.all(programs.map(stopProgram));
    backend?.close();
    await cp?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A request from the client pod to the api Service: through node-a's ztunnel, the waypoint, api-0's ztunnel. */
async function requestThroughTheWaypoint(
  route: { proxy: string; from: string; to: string },
  host = "api.shop.svc.cluster.local",
  method = "GET",
): Promise<string> {
  return httpOverSocks(route, `${method} / HTTP/1.1\r\nhost: ${host}\r\ncontent-length: 0\r\n\r\n`, {
    untilResponse: true,
  });
}

async function assertServedThroughTheWaypoint(route: { proxy: string; from: string; to: string }) {
  const response = await requestThroughTheWaypoint(route);
  assert.match(response, /^HTTP\/1\.1 200 /);
  assert.match(response, /api in the mesh$/);
}

describe("the ztunnel and waypoint programs in cluster1", { timeout: 120_000 }, () => {
  it("with --cluster-id cluster1, get their config from a control plane of cluster1", async () => {
    await withMesh(
      {
        ztunnel: { args: ["--cluster-id", "cluster1"], env: {} },
        waypoint: { args: ["--cluster-id", "cluster1"], env: {} },
      },
      assertServedThroughTheWaypoint,
    );
  });

  it("without the flag, read CLUSTER_ID (ztunnel) and ISTIO_META_CLUSTER_ID (waypoint)", async () => {
    await withMesh(
      {
        ztunnel: { args: [], env: { CLUSTER_ID: "cluster1" } },
        waypoint: { args: [], env: { ISTIO_META_CLUSTER_ID: "cluster1" } },
      },
      assertServedThroughTheWaypoint,
    );
  });
});

describe(
  "the ztunnel and waypoint programs in trust domain example.org, DNS domain corp.internal",
  {
    timeout: 120_000,
  },
  () => {
    const controlPlane = { trustDomain: "example.org", domainSuffix: "corp.internal" };
    const host = "api.shop.svc.corp.internal";
    // The waypoint sees each request: a route of the api Service, whose Envoy route name carries the
    // Service's host (api.shop.svc.corp.internal), marks each response; and an L7 rule that targets the
    // api Service, naming the client as Istio's documentation writes principals (cluster.local stands
    // for the mesh's own trust domain, here example.org), lets GET in and nothing else. It applies
    // only where the waypoint takes api.shop.svc.corp.internal for a Kubernetes Service.
    const manifests = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: api, port: 80 }]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: { add: [{ name: x-route, value: shop-api }] }
    backendRefs: [{ name: api, port: 80 }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: client-reads, namespace: shop }
spec:
  targetRefs: [{ kind: Service, group: "", name: api }]
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }]
    to: [{ operation: { methods: ["GET"] } }]`;
    const served = async (route: { proxy: string; from: string; to: string }) => {
      const response = await requestThroughTheWaypoint(route, host);
      assert.match(response, /^HTTP\/1\.1 200 /);
      assert.match(response, /api in the mesh$/);
      assert.match(response, /\r\nx-route: shop-api\r\n/i);
      const refused = await requestThroughTheWaypoint(route, host, "POST");
      assert.match(refused, /^HTTP\/1\.1 403 /);
    };

    it("told by --trust-domain and --cluster-domain, serve the api Service through the waypoint", async () => {
      const domains = ["--trust-domain", "example.org", "--cluster-domain", "corp.internal"];
      await withMesh(
        {
          controlPlane,
          manifests,
          ztunnel: { args: domains, env: {} },
          waypoint: { args: domains, env: {} },
        },
        served,
      );
    });

    it("without the flags, read TRUST_DOMAIN and CLUSTER_DOMAIN", async () => {
      const env = { TRUST_DOMAIN: "example.org", CLUSTER_DOMAIN: "corp.internal" };
      await withMesh(
        { controlPlane, manifests, ztunnel: { args: [], env }, waypoint: { args: [], env } },
        served,
      );
    });

    // A waypoint told the wrong domain cannot tell which policies target the Service (it would take its
    // host for a ServiceEntry's, and the Service's policy would not apply): it says so as soon as it
    // sees the Service, and refuses its connections rather than serve them unchecked.
    it("a waypoint told the trust domain but not the DNS domain refuses a bound Service named in another", async () => {
      const trust = { TRUST_DOMAIN: "example.org" };
      let waypointOut = "";
      let outcome = "";
      await withMesh(
        {
          controlPlane,
          manifests,
          ztunnel: { args: [], env: { ...trust, CLUSTER_DOMAIN: "corp.internal" } },
          waypoint: { args: [], env: trust },
          onReady: (programs) => {
            waypointOut = programs.waypoint.out();
          },
        },
        async (route) => {
          // The POST the Service's policy refuses, which a waypoint that missed the policy would serve.
          outcome = await requestThroughTheWaypoint(route, host, "POST").catch(
            (err: Error) => `failed: ${err.message}`,
          );
        },
      );
      assert.match(
        waypointOut,
        /a bound Service is named in the DNS domain corp\.internal, not cluster\.local: its connections are refused/,
      );
      assert.match(waypointOut, /"hostname":"api\.shop\.svc\.corp\.internal"/);
      assert.doesNotMatch(outcome, /HTTP\/1\.1/);
      assert.doesNotMatch(outcome, /api in the mesh/);
    });
  },
);

describe("HTTP/1.0 through the waypoint program", { timeout: 120_000 }, () => {
  const http10 = (route: { proxy: string; from: string; to: string }) =>
    httpOverSocks(route, "GET / HTTP/1.0\r\nhost: api.shop.svc.cluster.local\r\n\r\n", {
      untilResponse: true,
    });
  const cluster = { args: ["--cluster-id", "cluster1"], env: {} };

  it("is answered 426, as Istio's waypoints answer it by default", async () => {
    await withMesh({ ztunnel: cluster, waypoint: cluster }, async (route) => {
      assert.match(await http10(route), /^HTTP\/1\.1 426 /);
      await assertServedThroughTheWaypoint(route);
    });
  });

  it("is served with --accept-http10, or with ISTIO_META_HTTP10=1 as Istio reads the proxy's metadata", async () => {
    const settings: { args: string[]; env: Record<string, string> }[] = [
      { args: ["--cluster-id", "cluster1", "--accept-http10"], env: {} },
      { args: ["--cluster-id", "cluster1"], env: { ISTIO_META_HTTP10: "1" } },
    ];
    for (const waypoint of settings) {
      await withMesh({ ztunnel: cluster, waypoint }, async (route) => {
        const response = await http10(route);
        assert.match(response, /^HTTP\/1\.[01] 200 /);
        assert.match(response, /api in the mesh$/);
      });
    }
  });
});
