import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createWaypointHandler } from "./index.js";

describe("README example", () => {
  let backend: http.Server;
  let backendPort = 0;
  let server: net.Server;
  let handler: ReturnType<typeof createWaypointHandler>;

  before(async () => {
    backend = http.createServer((req, res) => res.end(`${req.url} via ${req.headers["x-via"]}`));
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    backendPort = (backend.address() as AddressInfo).port;

    // --- README example (keep in sync) ---
    handler = createWaypointHandler({
      routes: [
        {
          kind: "HTTPRoute",
          metadata: { name: "reviews", namespace: "default" },
          spec: {
            parentRefs: [{ kind: "Gateway", name: "waypoint" }],
            rules: [
              {
                matches: [{ path: { type: "PathPrefix", value: "/api" } }],
                filters: [
                  {
                    type: "RequestHeaderModifier",
                    requestHeaderModifier: { set: [{ name: "x-via", value: "waypoint" }] },
                  },
                ],
                backendRefs: [{ name: "reviews", port: 9080 }],
              },
            ],
          },
        },
      ],
      resolveBackend: (ref) =>
        ref.name === "reviews" ? [{ address: "127.0.0.1", port: backendPort }] : undefined,
      connect: (endpoint) => net.connect(endpoint.port, endpoint.address),
    });
    server = net.createServer((socket) =>
      handler.handle(socket, { peerIdentity: "spiffe://cluster.local/ns/default/sa/productpage" }),
    );
    server.listen(0, "127.0.0.1");
    // --- end of README example ---
    await new Promise<void>((resolve) => server.once("listening", resolve));
  });

  after(async () => {
    await handler.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    backend.closeAllConnections();
    await new Promise<void>((resolve) => backend.close(() => resolve()));
  });

  it("routes /api to the backend with the header set and 404s the rest", async () => {
    const port = (server.address() as AddressInfo).port;
    const get = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        http
          .get(
            { host: "127.0.0.1", port, path, headers: { host: "reviews.default.svc.cluster.local" } },
            (res) => {
              let body = "";
              res.on("data", (c: Buffer) => {
                body += c.toString();
              });
              res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
            },
          )
          .on("error", reject);
      });
    assert.deepEqual(await get("/api/reviews/1"), { status: 200, body: "/api/reviews/1 via waypoint" });
    assert.equal((await get("/other")).status, 404);
  });
});
