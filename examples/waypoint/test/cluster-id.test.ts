// A control plane serves the callers of its own cluster only, and a proxy told nothing says it is in
// `Kubernetes`. The ztunnel and the waypoint programs, told their cluster (`--cluster-id`, else the
// variable their Istio counterparts read), get their certificates and config from a control plane of
// cluster1, and a request goes through both.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type ControlPlane, startControlPlane } from "@ambient/example-control-plane";
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

/** Starts `main` under tsx with the test run's environment less Istio's cluster id variables, plus `env`. */
function startProgram(main: string, args: string[], env: Record<string, string>): Program {
  const { CLUSTER_ID: _a, ISTIO_META_CLUSTER_ID: _b, ...rest } = process.env;
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
  /** Extra flags and environment of each program. */
  ztunnel: { args: string[]; env: Record<string, string> };
  waypoint: { args: string[]; env: Record<string, string> };
}

/**
 * A control plane of cluster1 serving the shop namespace (a client pod and an api pod on node-a, the
 * api Service bound to the waypoint), node-a's ztunnel and the waypoint run as programs; `check`
 * runs once both are ready, with the SOCKS5 route of the client pod to the api Service.
 */
async function withCluster1Mesh(
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
`,
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
      clusterId: "cluster1",
    });
    backend = createServer((_req, res) => res.end("api in cluster1"));
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
    await check({ proxy: `${ip(1)}:15080`, from: ip(2), to: `${ip(100)}:80` });
  } finally {
    await Promise.all(programs.map(stopProgram));
    backend?.close();
    await cp?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A request from the client pod to the api Service: through node-a's ztunnel, the waypoint, api-0's ztunnel. */
async function assertServedThroughTheWaypoint(route: { proxy: string; from: string; to: string }) {
  const response = await httpOverSocks(
    route,
    "GET / HTTP/1.1\r\nhost: api.shop.svc.cluster.local\r\ncontent-length: 0\r\n\r\n",
    { untilResponse: true },
  );
  assert.match(response, /^HTTP\/1\.1 200 /);
  assert.match(response, /api in cluster1$/);
}

describe("the ztunnel and waypoint programs in cluster1", { timeout: 120_000 }, () => {
  it("with --cluster-id cluster1, get their config from a control plane of cluster1", async () => {
    await withCluster1Mesh(
      {
        ztunnel: { args: ["--cluster-id", "cluster1"], env: {} },
        waypoint: { args: ["--cluster-id", "cluster1"], env: {} },
      },
      assertServedThroughTheWaypoint,
    );
  });

  it("without the flag, read CLUSTER_ID (ztunnel) and ISTIO_META_CLUSTER_ID (waypoint)", async () => {
    await withCluster1Mesh(
      {
        ztunnel: { args: [], env: { CLUSTER_ID: "cluster1" } },
        waypoint: { args: [], env: { ISTIO_META_CLUSTER_ID: "cluster1" } },
      },
      assertServedThroughTheWaypoint,
    );
  });
});
