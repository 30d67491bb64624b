// A workload with an application tunnel (Workload.applicationTunnel, as istiod sets it for the
// instances of a waypoint bound with `ambient.istio.io/waypoint-inbound-binding: PROXY/<port>`):
// inbound tunnels to it are taken whatever address their authority names, sent to the tunnel's port,
// and, for protocol PROXY, start with a PROXY protocol v2 header that carries the client's address,
// the address the client asked for and its SPIFFE identity.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server, Socket, type Socket as SocketType } from "node:net";
import { Duplex, PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import {
  createHboneClient,
  decodeProxyHeader,
  type InboundTunnel,
  PROXY_TLV,
  type ProxyHeader,
  parseAuthority,
} from "@ambient/hbone";
import { createAuthorizationEngine, type WireAuthorization } from "@ambient/policy";
import type { Service, Workload } from "@ambient/xds";
import { startNodeZtunnel, startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { ipBytes, loopbackSubnet, testService, testWorkload } from "../test/fixtures.js";
import { ConnectionRegistry } from "./connections.js";
import { createInbound, type InboundPod } from "./inbound.js";
import { decideInboundDestination, type InboundLookups } from "./inbound-destination.js";
import { noopLogger } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";
import type { RunningZtunnel } from "./ztunnel.js";

const base = loopbackSubnet();
const ip = {
  node: `${base}.1`,
  client: `${base}.11`,
  waypoint: `${base}.14`,
  server: `${base}.20`,
  vip: `${base}.100`,
  otherVip: `${base}.101`,
};
const PEER = "spiffe://cluster.local/ns/demo/sa/sleep";

/** What a backend got on one connection: the PROXY header (if the bytes start with one) and the rest. */
interface Received {
  header: ProxyHeader | undefined;
  rest: string;
  /** The address the connection came from. */
  from: string;
}

/** A TCP server that reads each connection to its end, answers "ok", and hands what it got to `got`. */
async function backend(host: string): Promise<{ server: Server; port: number; next(): Promise<Received> }> {
  const waiting: ((r: Received) => void)[] = [];
  const received: Received[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => {});
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("end", () => {
      const all = Buffer.concat(chunks);
      let header: ProxyHeader | undefined;
      let rest = all;
      if (all.length >= 12 && all[0] === 0x0d && all[1] === 0x0a) {
        const decoded = decodeProxyHeader(all);
        assert.ok(decoded !== undefined, "a whole PROXY v2 header");
        header = decoded.header;
        rest = all.subarray(decoded.length);
      }
      const r = { header, rest: rest.toString(), from: socket.remoteAddress ?? "" };
      const w = waiting.shift();
      if (w === undefined) received.push(r);
      else w(r);
      socket.end("ok");
    });
  });
  server.listen(0, host);
  await once(server, "listening");
  return {
    server,
    port: (server.address() as AddressInfo).port,
    next: () => {
      const r = received.shift();
      return r !== undefined ? Promise.resolve(r) : new Promise((resolve) => waiting.push(resolve));
    },
  };
}

/**
 * An HBONE CONNECT as the server hands it over, to `authority`, from the client's address. Once
 * accepted, the client writes `payload` and ends; `answer` resolves with what came back, or with the
 * refusal status.
 */
function tunnelTo(authority: string, payload: string, from = ip.client) {
  let settle: (r: { status: number; answer: string }) => void = () => {};
  const result = new Promise<{ status: number; answer: string }>((resolve) => {
    settle = resolve;
  });
  const tunnel = {
    state: "pending" as string,
    authority: parseAuthority(authority),
    rawAuthority: authority,
    peerIdentity: { toString: () => PEER },
    remoteAddress: from,
    remotePort: 40000,
    headers: {},
    accept() {
      tunnel.state = "accepted";
      const toApp = new PassThrough();
      const toClient = new PassThrough();
      const chunks: Buffer[] = [];
      toClient.on("data", (c: Buffer) => chunks.push(c));
      toClient.once("end", () => settle({ status: 200, answer: Buffer.concat(chunks).toString() }));
      toApp.end(payload);
      return Duplex.from({ readable: toApp, writable: toClient });
    },
    refuse(status: number) {
      tunnel.state = "refused";
      settle({ status, answer: "" });
    },
  };
  return { tunnel: tunnel as unknown as InboundTunnel, result };
}

/** The waypoint pod, with `applicationTunnel`, behind Service `wp` (VIP `ip.vip`). */
const waypointWorkload = (applicationTunnel: Workload["applicationTunnel"], extra: Partial<Workload> = {}) =>
  testWorkload("waypoint", "node-a", ip.waypoint, {
    namespace: "demo",
    ...(applicationTunnel === undefined ? {} : { applicationTunnel }),
    ...extra,
  });

function inboundFor(workload: Workload, services: Service[] = [], policies: WireAuthorization[] = []) {
  const store = new WorkloadStore();
  store.upsert(workload.uid, { workload });
  for (const s of services) store.upsert(`${s.namespace}/${s.hostname}`, { service: s });
  // The server pod (another node's) and its Service, whose waypoint is not this pod.
  store.upsert("server", { workload: testWorkload("server", "node-b", ip.server, { namespace: "demo" }) });
  const engine = createAuthorizationEngine();
  for (const p of policies) engine.setAuthorization(p);
  const denied: string[] = [];
  const completed: Record<string, unknown>[] = [];
  const inbound = createInbound({
    nodeName: "node-a",
    hbonePort: 15008,
    proxyPorts: [15001, 15006],
    store,
    engine,
    registry: new ConnectionRegistry(),
    tcpMetrics: { opened() {}, bytes() {}, closed() {} },
    logger: {
      ...noopLogger,
      info: (o: object, msg?: string) => {
        if (msg?.startsWith("denied by") === true) denied.push(msg);
        if (msg === "connection complete") completed.push(o as Record<string, unknown>);
      },
    },
    isClosed: () => false,
  });
  return { inbound, store, denied, completed };
}

const nodePod = (workload: Workload): InboundPod => ({ uid: workload.uid, ip: ip.waypoint });

describe("application tunnel: inbound to a workload with applicationTunnel", () => {
  let app: Awaited<ReturnType<typeof backend>>;
  before(async () => {
    app = await backend(ip.waypoint);
  });
  after(() => app.server.close());

  it("PROXY: takes another address as authority, dials the tunnel port, and writes a PROXY v2 header first", async () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: app.port });
    const { inbound, completed } = inboundFor(wp);
    const { tunnel, result } = tunnelTo(`${ip.server}:8080`, "hello waypoint");
    inbound.handleTunnel(nodePod(wp), tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    const got = await app.next();
    assert.equal(got.header?.command, "PROXY");
    assert.deepEqual(got.header?.source, { address: ip.client, port: 40000 });
    assert.deepEqual(got.header?.destination, { address: ip.server, port: 8080 });
    assert.equal(got.header?.sourceIdentity, PEER);
    assert.deepEqual(
      got.header?.tlvs?.map((t) => t.type),
      [PROXY_TLV.sourceIdentity],
      "one TLV, type 0xD0, with the peer's identity",
    );
    assert.equal(got.rest, "hello waypoint");
    // The header is the proxy's: the access log counts the client's bytes only, and names the
    // authority the client asked for.
    for (let i = 0; i < 100 && completed.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(completed.length, 1);
    assert.equal(completed[0]?.bytes_recv, "hello waypoint".length);
    assert.equal(completed[0]?.["dst.hbone_addr"], `${ip.server}:8080`);
  });

  it("PROXY: a Service hostname authority carries the Service's VIP (IPv4, the pod's network) and port", async () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: app.port });
    const svc = testService(
      "server",
      ip.otherVip,
      [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }],
      {
        namespace: "demo",
        addresses: [
          { network: "elsewhere", address: ipBytes(`${base}.200`) },
          { network: "", address: Uint8Array.from([0xfd, ...new Array<number>(14).fill(0), 1]) },
          { network: "", address: ipBytes(ip.otherVip) },
        ],
      },
    );
    const { inbound } = inboundFor(wp, [svc]);
    const { tunnel, result } = tunnelTo("server.demo.svc.cluster.local:80", "by name");
    inbound.handleTunnel(nodePod(wp), tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    const got = await app.next();
    assert.deepEqual(got.header?.destination, { address: ip.otherVip, port: 80 });
    assert.equal(got.rest, "by name");
  });

  it("PROXY without a port: dials the port the authority resolves to, still with the header", async () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: 0 });
    const { inbound } = inboundFor(wp);
    const { tunnel, result } = tunnelTo(`${ip.server}:${app.port}`, "same port");
    inbound.handleTunnel(nodePod(wp), tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    const got = await app.next();
    assert.deepEqual(got.header?.destination, { address: ip.server, port: app.port });
    assert.equal(got.rest, "same port");
  });

  it("NONE: takes another address and dials the tunnel port, with no header", async () => {
    const wp = waypointWorkload({ protocol: "NONE", port: app.port });
    const { inbound } = inboundFor(wp);
    const { tunnel, result } = tunnelTo(`${ip.server}:8080`, "plain bytes");
    inbound.handleTunnel(nodePod(wp), tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    const got = await app.next();
    assert.equal(got.header, undefined);
    assert.equal(got.rest, "plain bytes");
  });

  it("PROXY, mixed address families: a header with no addresses, still with the identity", async () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: app.port });
    const { inbound } = inboundFor(wp);
    const { tunnel, result } = tunnelTo("[fd00::5]:8080", "v6 target", ip.client);
    inbound.handleTunnel(nodePod(wp), tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    const got = await app.next();
    assert.equal(got.header?.command, "PROXY");
    assert.equal(got.header?.source, undefined);
    assert.equal(got.header?.destination, undefined);
    assert.equal(got.header?.sourceIdentity, PEER);
    assert.equal(got.rest, "v6 target");
  });

  it("is authorized on the tunnel's port, the connection's real destination", async () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: app.port });
    const denyTunnelPort: WireAuthorization = {
      name: "deny-tunnel-port",
      namespace: "demo",
      scope: "NAMESPACE",
      action: "DENY",
      groups: [{ rules: [{ matches: [{ ...noMatch(), destinationPorts: [app.port] }] }] }],
    };
    const { inbound, denied } = inboundFor(wp, [], [denyTunnelPort]);
    const { tunnel, result } = tunnelTo(`${ip.server}:8080`, "x");
    inbound.handleTunnel(nodePod(wp), tunnel);
    assert.equal((await result).status, 401);
    assert.deepEqual(denied, ["denied by demo/deny-tunnel-port"]);
  });

  it("in-pod: a PROXY tunnel goes to the pod's loopback at the tunnel port, from loopback", async () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: 15088 });
    const { inbound } = inboundFor(wp);
    const dials: string[] = [];
    const pod: InboundPod = {
      ...nodePod(wp),
      connectUpstream: (host, port, sourceIp) => {
        dials.push(`${sourceIp} -> ${host}:${port}`);
        // Stands in for the pod's namespace: its loopback listener is the backend.
        const socket = new Socket({ allowHalfOpen: true });
        return socket.connect({ host: ip.waypoint, port: app.port });
      },
    };
    const { tunnel, result } = tunnelTo(`${ip.server}:8080`, "in pod");
    inbound.handleTunnel(pod, tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    assert.deepEqual(dials, ["127.0.0.1 -> 127.0.0.1:15088"]);
    const got = await app.next();
    assert.deepEqual(got.header?.source, { address: ip.client, port: 40000 });
    assert.equal(got.rest, "in pod");
  });

  it("in-pod: a NONE tunnel goes to the pod's address, from the client's", async () => {
    const wp = waypointWorkload({ protocol: "NONE", port: 15088 });
    const { inbound } = inboundFor(wp);
    const dials: string[] = [];
    const pod: InboundPod = {
      ...nodePod(wp),
      connectUpstream: (host, port, sourceIp) => {
        dials.push(`${sourceIp} -> ${host}:${port}`);
        const socket: SocketType = new Socket({ allowHalfOpen: true });
        return socket.connect({ host: ip.waypoint, port: app.port });
      },
    };
    const { tunnel, result } = tunnelTo(`${ip.server}:8080`, "none in pod");
    inbound.handleTunnel(pod, tunnel);
    assert.deepEqual(await result, { status: 200, answer: "ok" });
    assert.deepEqual(dials, [`${ip.client} -> ${ip.waypoint}:15088`]);
    assert.equal((await app.next()).rest, "none in pod");
  });
});

/** A match with every list empty, to set one field on. */
function noMatch() {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
  };
}

describe("application tunnel: the inbound decision", () => {
  const lookups = (workload: Workload, services: Service[] = []): InboundLookups => {
    const store = new WorkloadStore();
    store.upsert(workload.uid, { workload });
    for (const s of services) store.upsert(`${s.namespace}/${s.hostname}`, { service: s });
    return store;
  };
  const listener = { podIp: ip.waypoint, nodeName: "node-a", illegalPorts: [15008, 15001, 15006] };

  it("forwards to the tunnel port and names the PROXY target", () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: 15088 });
    const d = decideInboundDestination(listener, parseAuthority(`${ip.server}:8080`), lookups(wp));
    assert.equal(d.kind, "forward");
    assert.equal(d.kind === "forward" && d.port, 15088);
    assert.deepEqual(d.kind === "forward" && d.applicationTunnel, {
      protocol: "PROXY",
      target: { ip: ip.server, port: 8080 },
    });
  });

  it("still refuses the proxy's own ports, checked before the tunnel's port replaces them", () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: 15088 });
    const d = decideInboundDestination(listener, parseAuthority(`${ip.server}:15008`), lookups(wp));
    assert.deepEqual(d, { kind: "refuse", status: 503, reason: "port 15008 is the proxy's own" });
  });

  it("refuses a hostname whose Service has no address with 503", () => {
    const wp = waypointWorkload({ protocol: "PROXY", port: 15088 });
    const svc = testService("novip", ip.vip, [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }], {
      namespace: "demo",
      addresses: [],
    });
    const d = decideInboundDestination(
      listener,
      parseAuthority("novip.demo.svc.cluster.local:80"),
      lookups(wp, [svc]),
    );
    assert.equal(d.kind, "refuse");
    assert.equal(d.kind === "refuse" && d.status, 503);
  });

  it("without an application tunnel, another address is still refused with 400", () => {
    const wp = waypointWorkload(undefined);
    const d = decideInboundDestination(listener, parseAuthority(`${ip.server}:8080`), lookups(wp));
    assert.equal(d.kind === "refuse" && d.status, 400);
  });
});

describe("application tunnel: end to end through a ztunnel", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let ztunnel: RunningZtunnel;
  let app: Awaited<ReturnType<typeof backend>>;

  before(async () => {
    cp = await startTestControlPlane();
    app = await backend(ip.waypoint);
    cp.setWorkload(waypointWorkload({ protocol: "PROXY", port: app.port }));
    cp.setWorkload(testWorkload("server", "node-b", ip.server, { namespace: "demo" }));
    cp.setService(
      testService("server", ip.vip, [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }], {
        namespace: "demo",
      }),
    );
    ztunnel = await startNodeZtunnel(cp, ip.node);
  });

  after(async () => {
    await ztunnel?.close();
    await cp?.close();
    app?.server.close();
  });

  it("a CONNECT to a Service VIP through the waypoint's listener reaches its tunnel port behind a PROXY v2 header", async () => {
    const svid = await cp.issue(PEER);
    const client = createHboneClient({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: cp.rootCertPem,
    });
    try {
      const stream = await client.connect({
        address: `${ip.waypoint}:15008`,
        authority: `${ip.vip}:80`,
        expectedIdentities: ["spiffe://cluster.local/ns/demo/sa/waypoint"],
      });
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      const ended = once(stream, "end");
      stream.end("through the mesh");
      await ended;
      assert.equal(Buffer.concat(chunks).toString(), "ok");
    } finally {
      await client.destroy();
    }
    const got = await app.next();
    assert.equal(got.header?.command, "PROXY");
    assert.ok(got.header?.source !== undefined, "the client's address");
    assert.deepEqual(got.header?.destination, { address: ip.vip, port: 80 });
    assert.equal(got.header?.sourceIdentity, PEER);
    assert.equal(got.rest, "through the mesh");
  });
});
