import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rm, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { createWaypointHandler, type TunnelInfo, type WaypointHandler } from "../src/waypoint-handler.js";
import {
  type Backend,
  httpRoute,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

/**
 * An HBONE-shaped front door without mTLS: an HTTP/2 server whose CONNECT streams are handed to the
 * waypoint as plain Duplex streams, with the peer identity a real HBONE server would have verified.
 */
describe("tunnel streams (HTTP/2 CONNECT as the transport)", () => {
  let backend: Backend;
  let handler: WaypointHandler;
  let front: http2.Http2Server;
  let port: number;
  let session: http2.ClientHttp2Session;
  const infos: TunnelInfo[] = [];

  before(async () => {
    backend = await startBackend("tunnelled");
    handler = createWaypointHandler({
      routes: [httpRoute("r", [{ backendRefs: [{ name: "svc", port: 80 }] }])],
      resolveBackend: (b) => (b.name === "svc" ? [backend.endpoint] : undefined),
      // Asynchronous connect, as an HBONE client would be.
      connect: (ep) =>
        new Promise<Duplex>((resolve, reject) => {
          const s = net.connect(ep.port, ep.address, () => resolve(s));
          s.once("error", reject);
        }),
    });
    front = http2.createServer();
    front.on("stream", (stream, headers) => {
      if (headers[":method"] !== "CONNECT") {
        stream.respond({ ":status": 405 }, { endStream: true });
        return;
      }
      stream.respond({ ":status": 200 });
      const [address, p] = String(headers[":authority"]).split(":");
      const info: TunnelInfo = {
        peerIdentity: "spiffe://cluster.local/ns/default/sa/client",
        destination: { address, port: Number(p) },
      };
      infos.push(info);
      handler.handle(stream, info);
    });
    await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
    port = (front.address() as AddressInfo).port;
    session = http2.connect(`http://127.0.0.1:${port}`);
  });
  after(async () => {
    session.close();
    await handler.close();
    await new Promise<void>((resolve) => front.close(() => resolve()));
    await stopServer(backend.server);
  });

  function openTunnel(): http2.ClientHttp2Stream {
    return session.request({ ":method": "CONNECT", ":authority": "10.96.0.1:80" });
  }

  it("serves HTTP/1.1 keep-alive inside one tunnel", async () => {
    const tunnel = openTunnel();
    // An agent whose only connection is the tunnel stream (which has no TCP keep-alive knobs).
    class TunnelAgent extends http.Agent {
      override createConnection(): Duplex {
        return tunnel;
      }
      override keepSocketAlive(): boolean {
        return true;
      }
      override reuseSocket(): void {}
    }
    const agent = new TunnelAgent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        const req = http.request({ path, headers: { host: "svc" }, agent }, (res) => {
          let body = "";
          res.on("data", (c: Buffer) => {
            body += c.toString();
          });
          res.on("end", () => resolve(body));
        });
        req.on("error", reject);
        req.end();
      });
    const first = JSON.parse(await get("/one")) as { id: string; url: string };
    assert.equal(first.id, "tunnelled");
    assert.equal(first.url, "/one");
    const second = JSON.parse(await get("/two")) as { url: string };
    assert.equal(second.url, "/two");
    assert.equal(infos.length, 1);
    assert.equal(infos.at(-1)?.destination?.address, "10.96.0.1");
    tunnel.close();
    agent.destroy();
  });

  it("serves HTTP/2 (prior knowledge) inside one tunnel", async () => {
    const tunnel = openTunnel();
    const inner = http2.connect("http://10.96.0.1:80", { createConnection: () => tunnel });
    try {
      for (const path of ["/a", "/b"]) {
        const body = await new Promise<string>((resolve, reject) => {
          const req = inner.request({ ":path": path, ":authority": "svc" });
          let data = "";
          req.on("data", (c: Buffer) => {
            data += c.toString();
          });
          req.on("end", () => resolve(data));
          req.on("error", reject);
          req.end();
        });
        assert.equal((JSON.parse(body) as { url: string }).url, path);
      }
    } finally {
      inner.close();
    }
  });
});

describe("interop with nghttp (nghttp2-client)", () => {
  let backend: Backend;
  let wp: Waypoint;
  before(async () => {
    backend = await startBackend("nghttp");
    wp = await startWaypoint(
      { "default/svc": [backend.endpoint] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "svc", port: 80 }] }])] },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(backend.server);
  });
  it("answers an h2c prior-knowledge client, POST body included", async () => {
    const run = promisify(execFile);
    const file = join(tmpdir(), `router-nghttp-${process.pid}.txt`);
    await writeFile(file, "from nghttp");
    let stdout: string;
    try {
      ({ stdout } = await run("nghttp", ["-d", file, `http://127.0.0.1:${wp.port}/nghttp?x=1`], {
        timeout: 10_000,
      }));
    } finally {
      await rm(file, { force: true });
    }
    const echo = JSON.parse(stdout) as { id: string; method: string; url: string; body: string };
    assert.equal(echo.id, "nghttp");
    assert.equal(echo.method, "POST");
    assert.equal(echo.url, "/nghttp?x=1");
    assert.equal(echo.body, "from nghttp");
  });
});

describe("upstream over tunnel streams (HTTP/2 CONNECT to the backend)", () => {
  let backend: Backend;
  let ztunnel: http2.Http2Server;
  let ztunnelSession: http2.ClientHttp2Session;
  let wp: Waypoint;
  const tunnels: string[] = [];
  before(async () => {
    backend = await startBackend("behind-tunnel");
    // A stand-in for the destination ztunnel: each CONNECT stream is piped to the backend's TCP port.
    ztunnel = http2.createServer();
    ztunnel.on("stream", (stream, headers) => {
      tunnels.push(String(headers[":authority"]));
      const tcp = net.connect(backend.port, "127.0.0.1", () => {
        stream.respond({ ":status": 200 });
        stream.pipe(tcp).pipe(stream);
      });
      tcp.on("error", () => stream.destroy());
      stream.on("error", () => tcp.destroy());
      stream.on("close", () => tcp.destroy());
    });
    await new Promise<void>((resolve) => ztunnel.listen(0, "127.0.0.1", resolve));
    ztunnelSession = http2.connect(`http://127.0.0.1:${(ztunnel.address() as AddressInfo).port}`);
    wp = await startWaypoint(
      { "default/svc": [{ address: "10.1.2.3", port: 8080, protocol: "http1" }] },
      {
        routes: [httpRoute("r", [{ backendRefs: [{ name: "svc", port: 80 }] }])],
        connect: (ep) =>
          new Promise<Duplex>((resolve, reject) => {
            const s = ztunnelSession.request({
              ":method": "CONNECT",
              ":authority": `${ep.address}:${ep.port}`,
            });
            s.once("response", (h) =>
              h[":status"] === 200 ? resolve(s) : reject(new Error(`CONNECT ${h[":status"]}`)),
            );
            s.once("error", reject);
          }),
      },
    );
  });
  after(async () => {
    await wp.close();
    ztunnelSession.close();
    await new Promise<void>((resolve) => ztunnel.close(() => resolve()));
    await stopServer(backend.server);
  });

  it("pools HTTP/1.1 keep-alive connections over tunnel streams", async () => {
    const client = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 3; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.request(
          {
            port: wp.port,
            host: "127.0.0.1",
            method: "POST",
            path: `/t/${i}`,
            headers: { host: "svc" },
            agent: client,
          },
          (res) => {
            let data = "";
            res.on("data", (c: Buffer) => {
              data += c.toString();
            });
            res.on("end", () => resolve(data));
          },
        );
        req.on("error", reject);
        req.end(`body-${i}`);
      });
      const echo = JSON.parse(body) as { id: string; url: string; body: string };
      assert.deepEqual([echo.id, echo.url, echo.body], ["behind-tunnel", `/t/${i}`, `body-${i}`]);
    }
    client.destroy();
    // Sequential requests reuse one pooled upstream tunnel.
    assert.deepEqual(tunnels, ["10.1.2.3:8080"]);
  });
});
