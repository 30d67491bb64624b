import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { socks5Dial, startTestMesh, type TestMesh } from "../test/mesh-fixture.js";

// Backends that close idle keep-alive connections, reached by the waypoint over real HBONE tunnels: a
// client pod on node-a calls a Service bound to the waypoint (on node-a); the waypoint's upstream
// requests travel HBONE to node-b's ztunnel and on to the pod. When a backend closes an idle
// connection, node-b's ztunnel half-closes the tunnel; the waypoint must not send the next request
// into it. Addresses (inside the control plane's pod and Service ranges): pods 127.10.R.x, nodes
// 127.20.R.x, Service VIPs 127.30.R.x, with R drawn per run so that two runs never share one.

const R = 1 + Math.floor(Math.random() * 254);

const CLIENT_IP = `127.10.${R}.2`;
const WEB_IP = `127.10.${R}.3`;
const WAYPOINT_IP = `127.10.${R}.4`;
const IDLE_MS = 200;

/** Services bound to the waypoint: VIP, target port on the web pod, appProtocol. */
const SERVICES = {
  idleH1: { vip: `127.30.${R}.1`, port: 8080, appProtocol: "http" },
  idleH2: { vip: `127.30.${R}.2`, port: 8081, appProtocol: "http2" },
  dropH1: { vip: `127.30.${R}.3`, port: 8082, appProtocol: "http" },
  dropH2: { vip: `127.30.${R}.4`, port: 8083, appProtocol: "http2" },
} as const;

function manifests(): string {
  const pod = (name: string, ip: string, node: string, sa: string, labels: string) => `
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: idle
  labels: { ${labels} }
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  containers: [{ name: app, image: app }]
status:
  podIP: ${ip}
---`;
  const services = Object.entries(SERVICES)
    .map(
      ([name, s]) => `
apiVersion: v1
kind: Service
metadata:
  name: ${name.toLowerCase()}
  namespace: idle
  labels: { istio.io/use-waypoint: waypoint }
spec:
  clusterIP: ${s.vip}
  selector: { app: web }
  ports: [{ name: http, port: 80, targetPort: ${s.port}, appProtocol: ${s.appProtocol} }]
---`,
    )
    .join("");
  return `
apiVersion: v1
kind: Namespace
metadata:
  name: idle
  labels: { istio.io/dataplane-mode: ambient }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: client, namespace: idle }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: web, namespace: idle }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: waypoint, namespace: idle }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: idle
  labels: { istio.io/waypoint-for: service }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
status:
  addresses: [{ type: IPAddress, value: ${WAYPOINT_IP} }]
---
${pod("client-0", CLIENT_IP, "node-a", "client", "app: client")}
${pod("web-0", WEB_IP, "node-b", "web", "app: web")}
${pod("waypoint-0", WAYPOINT_IP, "node-a", "waypoint", "gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none")}
${services}
`;
}

/** `METHOD path` of every request a backend saw, in order. */
type Seen = string[];

/** HTTP/1.1 backend that closes a connection idle for `IDLE_MS`, without advertising it. */
async function idleClosingH1(port: number, seen: Seen): Promise<() => Promise<void>> {
  const idle = new Map<net.Socket, NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    clearTimeout(idle.get(req.socket));
    res.setHeader("connection", "keep-alive");
    res.on("finish", () =>
      idle.set(
        req.socket,
        setTimeout(() => req.socket.destroy(), IDLE_MS),
      ),
    );
    req.resume();
    req.on("end", () => res.end(`${req.method} ${req.url}`));
  });
  server.on("connection", (socket: net.Socket) => socket.on("close", () => clearTimeout(idle.get(socket))));
  server.listen(port, WEB_IP);
  await once(server, "listening");
  return async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

/** HTTP/2 backend that drops a session idle for `IDLE_MS`. */
async function idleClosingH2(port: number, seen: Seen): Promise<() => Promise<void>> {
  const sessions = new Set<http2.ServerHttp2Session>();
  const server = http2.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on("end", () => res.end(`${req.method} ${req.url}`));
  });
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
    session.setTimeout(IDLE_MS, () => session.destroy());
  });
  server.listen(port, WEB_IP);
  await once(server, "listening");
  return async () => {
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

/** Answers the first request on each connection; drops the connection on the head of a second one. */
async function dropsSecondH1(port: number, seen: Seen): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buffered = "";
    let answered = false;
    let counted = false;
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("latin1");
      const end = buffered.indexOf("\r\n\r\n");
      if (end === -1) return;
      const head = buffered.slice(0, end);
      const [method, path] = head.split(" ");
      if (!counted) seen.push(`${method} ${path}`);
      counted = true;
      if (answered) {
        socket.destroy();
        return;
      }
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (buffered.length < end + 4 + length) return;
      buffered = buffered.slice(end + 4 + length);
      answered = true;
      counted = false;
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${method!.length}\r\n\r\n${method}`);
    });
  });
  server.listen(port, WEB_IP);
  await once(server, "listening");
  return async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

/** Answers the first stream of each session; drops the session when a second stream opens. */
async function dropsSecondH2(port: number, seen: Seen): Promise<() => Promise<void>> {
  const sessions = new Set<http2.ServerHttp2Session>();
  const server = http2.createServer();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
    let streams = 0;
    session.on("stream", (stream, headers) => {
      seen.push(`${headers[":method"]} ${headers[":path"]}`);
      stream.on("error", () => {});
      if (++streams > 1) {
        session.destroy();
        return;
      }
      stream.resume();
      stream.on("end", () => {
        stream.respond({ ":status": 200 });
        stream.end(String(headers[":method"]));
      });
    });
  });
  server.listen(port, WEB_IP);
  await once(server, "listening");
  return async () => {
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

/**
 * One HTTP/1.1 request from the client pod through node-a's ztunnel (SOCKS5, as a captured app), with
 * `connection: close`; with `bodyDelayMs`, the body follows the head that much later.
 */
async function call(
  socks5: string,
  vip: string,
  method: string,
  path: string,
  body = "",
  bodyDelayMs = 0,
): Promise<{ status: number; body: string }> {
  const { socket, text: received } = await socks5Dial({ proxy: socks5, from: CLIENT_IP, to: `${vip}:80` });
  const head = `${method} ${path} HTTP/1.1\r\nhost: ${vip}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  // The answer ends with the connection (`connection: close`).
  const closed = once(socket, "close");
  if (bodyDelayMs === 0) socket.write(head + body);
  else {
    socket.write(head);
    setTimeout(() => socket.write(body), bodyDelayMs);
  }
  await closed;
  const text = received();
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  const headEnd = text.indexOf("\r\n\r\n");
  let rest = text.slice(headEnd + 4);
  if (!/\r\ntransfer-encoding:\s*chunked/i.test(text.slice(0, headEnd))) return { status, body: rest };
  let decoded = "";
  for (;;) {
    const lineEnd = rest.indexOf("\r\n");
    const size = Number.parseInt(rest.slice(0, lineEnd), 16);
    if (!(size > 0)) return { status, body: decoded };
    decoded += rest.slice(lineEnd + 2, lineEnd + 2 + size);
    rest = rest.slice(lineEnd + 4 + size);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("waypoint upstream connections over HBONE, to backends that close idle ones", () => {
  let mesh: TestMesh;
  const closers: (() => Promise<void>)[] = [];
  const seen: Record<keyof typeof SERVICES, Seen> = { idleH1: [], idleH2: [], dropH1: [], dropH2: [] };
  let socks5 = "";

  before(async () => {
    closers.push(await idleClosingH1(SERVICES.idleH1.port, seen.idleH1));
    closers.push(await idleClosingH2(SERVICES.idleH2.port, seen.idleH2));
    closers.push(await dropsSecondH1(SERVICES.dropH1.port, seen.dropH1));
    closers.push(await dropsSecondH2(SERVICES.dropH2.port, seen.dropH2));
    mesh = await startTestMesh({
      manifests: manifests(),
      tempPrefix: "waypoint-idle-",
      nodeIps: [`127.20.${R}.1`, `127.20.${R}.2`],
      waypoint: { gateway: { name: "waypoint", namespace: "idle" }, ip: WAYPOINT_IP },
    });
    socks5 = mesh.socks5;
  });

  after(async () => {
    await mesh?.close();
    await Promise.allSettled(closers.map((close) => close()));
  });

  for (const [name, protocol] of [
    ["idleH1", "HTTP/1.1"],
    ["idleH2", "HTTP/2"],
  ] as const) {
    it(
      `answers a GET after the backend closed the idle ${protocol} connection`,
      { timeout: 60_000 },
      async () => {
        const vip = SERVICES[name].vip;
        assert.deepEqual(await call(socks5, vip, "GET", "/one"), { status: 200, body: "GET /one" });
        await sleep(IDLE_MS * 3);
        assert.deepEqual(await call(socks5, vip, "GET", "/two"), { status: 200, body: "GET /two" });
        assert.deepEqual(seen[name], ["GET /one", "GET /two"]);
      },
    );
  }

  for (const [name, protocol] of [
    ["dropH1", "HTTP/1.1"],
    ["dropH2", "HTTP/2"],
  ] as const) {
    it(
      `sends a GET once more, and a POST only once, when the pooled ${protocol} connection dies unanswered`,
      {
        timeout: 60_000,
      },
      async () => {
        const vip = SERVICES[name].vip;
        assert.equal((await call(socks5, vip, "GET", "/warm")).status, 200);
        await sleep(50);
        assert.deepEqual(await call(socks5, vip, "GET", "/again"), { status: 200, body: "GET" });
        assert.deepEqual(seen[name], ["GET /warm", "GET /again", "GET /again"]);
        // The POST must go second on a pooled connection. The HTTP/2 retry's session is pooled; the
        // HTTP/1.1 retry's connection is not, so warm one first. The POST's body is still on its way
        // when the connection dies.
        const warm = name === "dropH1" ? ["GET /warm-again"] : [];
        for (const line of warm) assert.equal((await call(socks5, vip, "GET", line.slice(4))).status, 200);
        await sleep(50);
        const post = await call(socks5, vip, "POST", "/admin", "payload", 200);
        assert.equal(post.status, 503);
        assert.deepEqual(seen[name].slice(3), [...warm, "POST /admin"]);
      },
    );
  }
});
