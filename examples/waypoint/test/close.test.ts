// A waypoint closes once, however it is asked: close() is one promise for every caller, a shutdown's
// drain ends on that same close, and `closed` resolves when the waypoint has closed, whatever closed it.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer as createHttpServer } from "node:http";
import { connect } from "node:net";
import { describe, it } from "node:test";
import { pino } from "pino";
import type { RunningWaypoint } from "../src/index.js";
import {
  loopbackSubnet,
  type SocksConnection,
  shopPod,
  shopServiceOnWaypoint,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
  waitFor,
} from "./mesh-fixture.js";

const mesh = (ip: (n: number) => string) => `
${shopWithWaypoint(ip(6))}
---
${shopPod({ name: "client", app: "client", node: "node-a", ip: ip(2) })}
---
${shopPod({ name: "web-0", app: "web", node: "node-b", ip: ip(11) })}
---
${shopServiceOnWaypoint({ name: "web", clusterIp: ip(103) })}
`;

/** One test's mesh on its own subnet, with a web backend that holds `/slow` until the test lets it go. */
interface ClosingMesh {
  waypoint: RunningWaypoint;
  /** Sends `GET /slow` from the client pod through the waypoint; resolves once web holds it. */
  holdRequest(): Promise<{ connection: SocksConnection; socketClosed: Promise<void> }>;
  /** Answers every held request. */
  release(): void;
  /** How many times the waypoint logged that it closed. */
  closedLogs(): number;
  readinessStatus(): Promise<number>;
  close(): Promise<void>;
}

async function startClosingMesh(): Promise<ClosingMesh> {
  const { cidr, ip } = loopbackSubnet();
  const held: (() => void)[] = [];
  const web = createHttpServer((req, res) => {
    const answer = () => res.writeHead(200, { "content-length": "3" }).end("web");
    if (req.url === "/slow") held.push(answer);
    else answer();
  });
  web.listen(8080, ip(11));
  await once(web, "listening");
  const lines: { msg?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  const release = () => {
    for (const go of held.splice(0)) go();
  };
  const stopWeb = () => {
    release();
    web.closeAllConnections();
    web.close();
  };
  let testMesh: TestMesh;
  try {
    testMesh = await startTestMesh({
      manifests: mesh(ip),
      tempPrefix: "waypoint-close-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        ports: { admin: 0, metrics: 0, readiness: 0 },
        logger,
      },
    });
  } catch (err) {
    stopWeb();
    throw err;
  }
  const { waypoint } = testMesh;
  return {
    waypoint,
    async holdRequest() {
      const connection = await socks5Dial({ proxy: testMesh.socks5, from: ip(2), to: `${ip(103)}:80` });
      // A reset is a close too here: events.once would reject on the socket's error.
      const socketClosed = new Promise<void>((resolve) => connection.socket.once("close", () => resolve()));
      const before = held.length;
      connection.socket.write(`GET /slow HTTP/1.1\r\nhost: web.shop.svc.cluster.local\r\n\r\n`);
      await waitFor(() => held.length > before);
      return { connection, socketClosed };
    },
    release,
    closedLogs: () => lines.filter((line) => line.msg === "waypoint closed").length,
    async readinessStatus() {
      const res = await fetch(`http://${waypoint.operatorAddresses.readiness}/healthz/ready`);
      await res.text();
      return res.status;
    },
    async close() {
      release();
      await testMesh.close();
      stopWeb();
    },
  };
}

/** Whether `promise` has settled by now (after pending callbacks and I/O have run). */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

/** Resolves when nothing listens on `address` (`ip:port`) any more; rejects when something answers. */
function refused(address: string): Promise<void> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port) });
    socket.once("connect", () => {
      socket.destroy();
      reject(new Error(`${address} still accepts connections`));
    });
    socket.once("error", () => resolve());
  });
}

describe("waypoint close() and closed", { timeout: 60_000 }, () => {
  it("returns the same promise to a second close() and tears down once", async () => {
    const m = await startClosingMesh();
    try {
      const first = m.waypoint.close();
      const second = m.waypoint.close();
      assert.equal(second, first);
      await second;
      // The second caller's promise resolved once the waypoint was closed, not before.
      for (const address of Object.values(m.waypoint.operatorAddresses)) await refused(address);
      assert.equal(m.closedLogs(), 1);
      // Asked again after the fact: the same promise, nothing torn down again.
      assert.equal(m.waypoint.close(), first);
      await m.waypoint.close();
      assert.equal(m.closedLogs(), 1);
    } finally {
      await m.close();
    }
  });

  it("resolves a close() called during a shutdown() drain with the teardown that ends the drain", async () => {
    const m = await startClosingMesh();
    try {
      const { socketClosed } = await m.holdRequest();
      const started = performance.now();
      const drain = m.waypoint.shutdown({ deadlineMs: 30_000 });
      assert.equal(await m.readinessStatus(), 503);
      assert.equal(m.waypoint.shutdown(), drain, "a second shutdown() while draining is the same one");
      assert.equal(await settled(drain), false, "the request in flight holds the drain");

      const closing = m.waypoint.close();
      assert.equal(m.waypoint.close(), closing);
      let logsWhenDrainEnded = -1;
      const drainEnded = drain.then(() => {
        logsWhenDrainEnded = m.closedLogs();
      });
      await closing;
      await drainEnded;
      // The drain ended on close()'s teardown, the only one, well before its own deadline.
      assert.equal(logsWhenDrainEnded, 1);
      assert.equal(m.closedLogs(), 1);
      assert.ok(performance.now() - started < 10_000, "close() cut the drain short");
      await socketClosed;
      // Both finished: another shutdown() or close() resolves at once, tearing nothing down again.
      await m.waypoint.shutdown();
      await m.waypoint.close();
      assert.equal(m.closedLogs(), 1);
    } finally {
      await m.close();
    }
  });

  it("resolves closed once close() has closed the waypoint, and a later shutdown() with it", async () => {
    const m = await startClosingMesh();
    try {
      const { closed } = m.waypoint;
      assert.ok(closed instanceof Promise);
      assert.equal(m.waypoint.closed, closed, "one promise, read as often as you like");
      assert.equal(await settled(closed), false, "a running waypoint is not closed");
      const closing = m.waypoint.close();
      await closed;
      assert.equal(m.closedLogs(), 1);
      assert.equal(await settled(closing), true);
      // shutdown() after close() neither throws nor hangs: it ends on the same close.
      await m.waypoint.shutdown({ deadlineMs: 30_000 });
      assert.equal(m.closedLogs(), 1);
    } finally {
      await m.close();
    }
  });

  it("resolves closed once shutdown() has drained, after the request in flight is answered", async () => {
    const m = await startClosingMesh();
    try {
      const { connection, socketClosed } = await m.holdRequest();
      const drain = m.waypoint.shutdown({ deadlineMs: 30_000 });
      assert.equal(await m.readinessStatus(), 503);
      assert.equal(await settled(m.waypoint.closed), false, "the request in flight holds it open");

      m.release();
      await m.waypoint.closed;
      await socketClosed;
      assert.match(connection.text(), /^HTTP\/1\.1 200 [\s\S]*\r\nconnection: close\r\n[\s\S]*web$/i);
      assert.equal(await settled(drain), true);
      assert.equal(m.closedLogs(), 1);
      // close() and shutdown() after the drain finished resolve at once.
      await m.waypoint.close();
      await m.waypoint.shutdown();
      assert.equal(m.closedLogs(), 1);
    } finally {
      await m.close();
    }
  });

  it("resolves closed when the drain deadline cuts a request in flight", async () => {
    const m = await startClosingMesh();
    try {
      const { connection, socketClosed } = await m.holdRequest();
      const started = performance.now();
      const drain = m.waypoint.shutdown({ deadlineMs: 300 });
      await m.waypoint.closed;
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 290, `closed after ${elapsed} ms, before the deadline`);
      await socketClosed;
      assert.equal(connection.text(), "", "the held request got no answer");
      assert.equal(await settled(drain), true);
      assert.equal(m.closedLogs(), 1);
    } finally {
      await m.close();
    }
  });
});
