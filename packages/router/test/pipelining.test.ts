// HTTP/1.1 pipelining at the waypoint: requests a client sends back to back on one connection are
// served one at a time, in order, as Envoy's codec takes them, not all at once on a connection each.
import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { httpRoute, startWaypoint, stopServer } from "./harness.js";

/** A waypoint routing every request to a backend that answers with `answer`. */
async function waypointTo(answer: http.RequestListener) {
  const backend = http.createServer(answer);
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const endpoint = { address: "127.0.0.1", port: (backend.address() as AddressInfo).port };
  const wp = await startWaypoint(
    { "default/web": [endpoint] },
    { routes: [httpRoute("r", [{ backendRefs: [{ name: "web", port: 80 }] }])] },
    { destination: { address: "10.96.0.1", port: 80 } },
  );
  const close = async () => {
    await wp.close();
    await stopServer(backend);
  };
  return { port: wp.port, close };
}

describe("pipelined HTTP/1.1 requests", () => {
  it("are served one at a time and in order, over one upstream connection", async () => {
    let active = 0;
    let most = 0;
    const upstreamSockets = new Set<net.Socket>();
    const wp = await waypointTo((req, res) => {
      upstreamSockets.add(req.socket);
      active++;
      most = Math.max(most, active);
      // Slow enough that requests served at once would overlap.
      setTimeout(() => {
        active--;
        res.end(`answer to ${req.url}`);
      }, 5);
    });
    const count = 50;
    try {
      const socket = net.connect(wp.port, "127.0.0.1");
      let text = "";
      socket.setEncoding("utf8");
      socket.on("data", (c: string) => {
        text += c;
      });
      const requests = Array.from(
        { length: count },
        (_, i) => `GET /r${i} HTTP/1.1\r\nhost: web\r\n\r\n`,
      ).join("");
      socket.write(requests);
      const deadline = Date.now() + 15_000;
      while ((text.match(/HTTP\/1\.1 200 /g) ?? []).length < count) {
        assert.ok(
          Date.now() < deadline,
          `${(text.match(/HTTP\/1\.1 200 /g) ?? []).length} of ${count} answered`,
        );
        await new Promise((r) => setTimeout(r, 10));
      }
      socket.destroy();
      const answers = [...text.matchAll(/answer to (\/r\d+)/g)].map((m) => m[1]);
      assert.deepEqual(
        answers,
        Array.from({ length: count }, (_, i) => `/r${i}`),
      );
      assert.equal(most, 1, "requests of one connection overlapped at the backend");
      assert.ok(upstreamSockets.size <= 2, `${upstreamSockets.size} upstream connections`);
    } finally {
      await wp.close();
    }
  });

  it("closes a connection with more pipelined requests waiting than it may hold", async () => {
    const wp = await waypointTo((_req, res) => {
      setTimeout(() => res.end("ok"), 200);
    });
    try {
      const socket = net.connect(wp.port, "127.0.0.1");
      socket.on("error", () => {});
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      socket.write(Array.from({ length: 400 }, () => "GET / HTTP/1.1\r\nhost: web\r\n\r\n").join(""));
      const timedOut = await Promise.race([
        closed.then(() => false),
        new Promise<boolean>((r) => setTimeout(() => r(true), 5000)),
      ]);
      assert.equal(timedOut, false, "the connection is still open");
    } finally {
      await wp.close();
    }
  });
});
