import assert from "node:assert/strict";
import { once } from "node:events";
import { get } from "node:http";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { createHboneClient, HboneError } from "@ambient/hbone";
import type { Service, Workload } from "@ambient/xds";
import { startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { encodeGreeting, encodeRequest, parseReply, SOCKS5_REPLY } from "./socks5.js";
import { type RunningZtunnel, socks5AddressOf, startZtunnel } from "./ztunnel.js";

// A fresh 127.x.y.0/24 per run so parallel runs never share an address.
const base = `127.${40 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 256)}`;
const ip = {
  node: `${base}.1`,
  sleep: `${base}.11`,
  echo: `${base}.12`,
  web: `${base}.13`,
  waypoint: `${base}.14`,
  outsider: `${base}.50`,
  vip: `${base}.100`,
  pinnedVip: `${base}.101`,
};
const echoHost = "echo.demo.svc.cluster.local";
const HANDSHAKE_TIMEOUT_MS = 300;
const MAX_HANDSHAKES = 256;

const bytes = (address: string) => Uint8Array.from(address.split(".").map(Number));

function workload(name: string, address: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `Kubernetes//Pod/demo/${name}`,
    name,
    namespace: "demo",
    addresses: [bytes(address)],
    hostname: "",
    network: "",
    tunnelProtocol: "HBONE",
    trustDomain: "",
    serviceAccount: name,
    node: "node-a",
    canonicalName: name,
    canonicalRevision: "latest",
    workloadType: "POD",
    workloadName: name,
    nativeTunnel: false,
    services: {},
    authorizationPolicies: [],
    status: "HEALTHY",
    clusterId: "Kubernetes",
    networkMode: "STANDARD",
    extensions: [],
    ...extra,
  };
}

/** A TCP server that counts connections and bytes, and answers "<name>:" + what it got, after FIN. */
async function countingServer(host: string, name: string) {
  const seen = { connections: 0, bytes: 0 };
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    seen.connections++;
    socket.on("error", () => {});
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => {
      seen.bytes += c.length;
      chunks.push(c);
    });
    socket.once("end", () => socket.end(`${name}:${Buffer.concat(chunks).toString()}`));
  });
  server.listen(0, host);
  await once(server, "listening");
  return { server, seen, port: (server.address() as AddressInfo).port };
}

function httpGet(address: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(`http://${address}${path}`, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).once("error", reject);
  });
}

function dial(proxy: string, from: string): Promise<Socket> {
  const [host, port] = proxy.split(":");
  const socket = connect({ host, port: Number(port), localAddress: from, allowHalfOpen: true });
  socket.on("error", () => {});
  return once(socket, "connect").then(() => socket);
}

/** Sends the greeting and `request`; resolves with the reply code, or -1 when closed without one. */
async function socksRequest(
  proxy: string,
  from: string,
  request: Uint8Array,
): Promise<{ reply: number; socket: Socket }> {
  const socket = await dial(proxy, from);
  socket.write(encodeGreeting());
  socket.write(request);
  let buffered = Buffer.alloc(0);
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const parsed = buffered.length < 2 ? undefined : parseReply(buffered.subarray(2));
      if (parsed === undefined) return;
      socket.off("data", onData);
      const rest = buffered.subarray(2 + parsed.length);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ reply: parsed.reply, socket });
    };
    socket.on("data", onData);
    socket.once("close", () => resolve({ reply: -1, socket }));
  });
}

function domainRequest(name: string, port: number): Uint8Array {
  const n = Buffer.from(name, "latin1");
  return Uint8Array.from([5, 1, 0, 3, n.length, ...n, port >> 8, port & 0xff]);
}

function readAll(socket: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => socket.once("close", () => resolve(Buffer.concat(chunks).toString())));
}

describe("ztunnel security", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let ztunnel: RunningZtunnel;
  let echo: Awaited<ReturnType<typeof countingServer>>;
  let web: Awaited<ReturnType<typeof countingServer>>;
  let waypoint: Awaited<ReturnType<typeof countingServer>>;

  before(async () => {
    cp = await startTestControlPlane();
    echo = await countingServer(ip.echo, "echo");
    web = await countingServer(ip.web, "web");
    waypoint = await countingServer(ip.waypoint, "waypoint");
    const serviceKey = `demo/${echoHost}`;
    cp.setWorkload(workload("sleep", ip.sleep));
    cp.setWorkload(
      workload("echo-0", ip.echo, {
        services: {
          [serviceKey]: { ports: [{ servicePort: 80, targetPort: echo.port, appProtocol: "TCP" }] },
        },
      }),
    );
    cp.setWorkload(workload("web-v1", ip.web));
    cp.setWorkload(workload("waypoint", ip.waypoint));
    const service: Service = {
      name: "echo",
      namespace: "demo",
      hostname: echoHost,
      addresses: [{ network: "", address: bytes(ip.vip) }],
      ports: [{ servicePort: 80, targetPort: echo.port, appProtocol: "TCP" }],
      subjectAltNames: [],
      ipFamilies: "IPV4_ONLY",
      extensions: [],
      canonical: true,
      ingressUseWaypoint: false,
      weightedWaypoints: [],
      visibility: "PUBLIC",
    };
    cp.setService(service);
    // A Service whose waypoint is a pod of this node (a "sandwich" waypoint without its own listener).
    cp.setService({
      ...service,
      name: "pinned",
      hostname: "pinned.demo.svc.cluster.local",
      addresses: [{ network: "", address: bytes(ip.pinnedVip) }],
      ports: [{ servicePort: waypoint.port, targetPort: 9999, appProtocol: "TCP" }],
      waypoint: { address: { network: "", address: bytes(ip.waypoint) }, hboneMtlsPort: 15008 },
    } as Service);
    ztunnel = await startZtunnel({
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      socks5: { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS, maxHandshakes: MAX_HANDSHAKES },
      nodeName: "node-a",
      nodeIp: ip.node,
      token: await cp.tokenFor("node-a"),
    });
    await ztunnel.ready;
  });

  after(async () => {
    await ztunnel?.close();
    await cp?.close();
    echo?.server.close();
    web?.server.close();
    waypoint?.server.close();
  });

  describe("inbound HBONE reaches only the pod whose listener accepted the tunnel", () => {
    const tunnel = async (listenerIp: string, authority: string, payload: string, identity = "echo-0") => {
      const svid = await cp.issue("spiffe://cluster.local/ns/demo/sa/sleep");
      const creds = { key: svid.privateKeyPem, certChain: svid.certChainPem, trustBundle: cp.rootCertPem };
      const client = createHboneClient(creds);
      try {
        const stream = await client.connect({
          address: `${listenerIp}:15008`,
          authority,
          expectedIdentities: [`spiffe://cluster.local/ns/demo/sa/${identity}`],
        });
        const answer = readAll(stream as unknown as Socket);
        stream.end(payload);
        return { status: 200, answer: await answer };
      } catch (err) {
        if (err instanceof HboneError && err.status !== undefined) return { status: err.status, answer: "" };
        throw err;
      } finally {
        await client.destroy();
      }
    };

    it("refuses another pod's address as authority with 400; nothing reaches that pod", async () => {
      const before = { ...web.seen };
      const result = await tunnel(ip.echo, `${ip.web}:${web.port}`, "to web through echo's listener");
      assert.equal(result.status, 400);
      assert.deepEqual(web.seen, before);
    });

    it("forwards the pod's own address", async () => {
      const result = await tunnel(ip.echo, `${ip.echo}:${echo.port}`, "hi");
      assert.deepEqual(result, { status: 200, answer: "echo:hi" });
    });

    it("forwards a Service hostname authority to the accepting pod's target port", async () => {
      const result = await tunnel(ip.echo, `${echoHost}:80`, "by name");
      assert.deepEqual(result, { status: 200, answer: "echo:by name" });
    });

    it("forwards a VIP whose Service names the pod as waypoint to that pod, not the Service", async () => {
      const result = await tunnel(ip.waypoint, `${ip.pinnedVip}:${waypoint.port}`, "sandwich", "waypoint");
      assert.deepEqual(result, { status: 200, answer: "waypoint:sandwich" });
    });

    it("refuses the Service VIP when the pod is not its waypoint (400) and the HBONE port (503)", async () => {
      assert.equal((await tunnel(ip.echo, `${ip.vip}:80`, "x")).status, 400);
      assert.equal((await tunnel(ip.echo, `${ip.echo}:15008`, "x")).status, 503);
    });
  });
  describe("SOCKS5 destinations are canonical addresses or mesh Service names", () => {
    // Spellings the C resolver reads as web-v1's address: none may reach it.
    const [a, b, c, d] = ip.web.split(".").map(Number) as [number, number, number, number];
    const asInt = ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
    const aliases = [
      `0x${asInt.toString(16)}`,
      String(asInt),
      `0${a.toString(8)}.${b}.${c}.${d}`,
      `${a}.${b}.${(c << 8) | d}`,
      `${a}.${(b << 16) | (c << 8) | d}`,
      `${ip.web}.`,
      `::ffff:${a}.${b}.${c}.${d}%lo`,
      "localhost",
    ];
    for (const alias of aliases) {
      it(`refuses ${alias} with reply 4; nothing reaches web-v1`, async () => {
        const before = { ...web.seen };
        const { reply, socket } = await socksRequest(
          socks5AddressOf(ztunnel),
          ip.sleep,
          domainRequest(alias, web.port),
        );
        socket.destroy();
        assert.equal(reply, SOCKS5_REPLY.hostUnreachable);
        assert.deepEqual(web.seen, before);
      });
    }

    it("connects a Service hostname and canonical IP text", async () => {
      for (const name of [echoHost, ip.echo]) {
        const port = name === echoHost ? 80 : echo.port;
        const { reply, socket } = await socksRequest(
          socks5AddressOf(ztunnel),
          ip.sleep,
          domainRequest(name, port),
        );
        assert.equal(reply, SOCKS5_REPLY.succeeded, name);
        const answer = readAll(socket);
        socket.end(name);
        assert.equal(await answer, `echo:${name}`);
      }
    });
  });

  describe("SOCKS5 handshakes that never complete", () => {
    /** Resolves when the proxy closed its side: the client sees its FIN ("end") or a reset ("close"). */
    const closedBy = (socket: Socket) =>
      new Promise<void>((resolve) => {
        socket.once("end", () => resolve());
        socket.once("close", () => resolve());
      });
    const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
        promise.then(
          (v) => {
            clearTimeout(timer);
            resolve(v);
          },
          (e) => {
            clearTimeout(timer);
            reject(e);
          },
        );
      });

    it("closes 200 half-closed or stalled handshakes; readiness and config_dump still answer", async () => {
      const before = ztunnel.configDump().socks5.handshakes;
      const sockets: Socket[] = [];
      const closed: Promise<void>[] = [];
      try {
        for (let i = 0; i < 200; i++) {
          const socket = await dial(socks5AddressOf(ztunnel), ip.sleep);
          sockets.push(socket);
          closed.push(closedBy(socket));
          socket.resume(); // reads what the proxy sends, so its FIN is seen
          const kind = i % 4;
          if (kind === 0)
            socket.end(); // FIN before a byte
          else if (kind === 1)
            socket.end(Buffer.from([5, 1])); // FIN inside the greeting
          else if (kind === 2) socket.write(Buffer.concat([encodeGreeting(), Buffer.from([5, 1, 0])])); // stalls in the request
          // kind 3: connects and says nothing
        }
        // Every socket is closed by the proxy.
        await within(Promise.all(closed), HANDSHAKE_TIMEOUT_MS + 10_000, "server closes");
        const dump = ztunnel.configDump().socks5;
        assert.equal(dump.handshakesInProgress, 0);
        assert.equal(dump.handshakes.client_closed - before.client_closed, 100);
        assert.equal(dump.handshakes.timeout - before.timeout, 100);
        assert.equal((await httpGet(ztunnel.addresses.readiness, "/healthz/ready")).status, 200);
        assert.equal((await httpGet(ztunnel.addresses.admin, "/config_dump")).status, 200);
        // And SOCKS5 still serves.
        const { reply, socket } = await socksRequest(
          socks5AddressOf(ztunnel),
          ip.sleep,
          encodeRequest(ip.vip, 80),
        );
        socket.destroy();
        assert.equal(reply, SOCKS5_REPLY.succeeded);
      } finally {
        for (const socket of sockets) socket.destroy();
      }
    });

    it("refuses a source that is not a local pod before it sends anything", async () => {
      const socket = await dial(socks5AddressOf(ztunnel), ip.outsider);
      const got: Buffer[] = [];
      socket.on("data", (c: Buffer) => got.push(c));
      // Nothing is written: the refusal comes anyway, then the proxy closes once the client does.
      await within(once(socket, "end"), 10_000, "refusal");
      assert.deepEqual([...Buffer.concat(got)], [5, 0, 5, SOCKS5_REPLY.notAllowed, 0, 1, 0, 0, 0, 0, 0, 0]);
      const closed = closedBy(socket);
      socket.end();
      await closed;
    });
  });

  describe("/config_dump", () => {
    it("shows workload, service and waypoint addresses as text", async () => {
      const { status, body } = await httpGet(ztunnel.addresses.admin, "/config_dump");
      assert.equal(status, 200);
      assert.doesNotMatch(body, /"type": "Buffer"|"data": \[/);
      const dump = JSON.parse(body) as {
        workloads: { name: string; addresses: unknown[] }[];
        services: {
          hostname: string;
          addresses: { address: unknown }[];
          waypoint?: { address: { address: unknown } };
        }[];
      };
      const addresses = Object.fromEntries(dump.workloads.map((w) => [w.name, w.addresses]));
      assert.deepEqual(addresses, {
        sleep: [ip.sleep],
        "echo-0": [ip.echo],
        "web-v1": [ip.web],
        waypoint: [ip.waypoint],
      });
      assert.deepEqual(
        dump.services
          .map((s) => [s.hostname, s.addresses.map((a) => a.address), s.waypoint?.address.address])
          .sort(),
        [
          [echoHost, [ip.vip], undefined],
          ["pinned.demo.svc.cluster.local", [ip.pinnedVip], ip.waypoint],
        ],
      );
    });
  });
});
