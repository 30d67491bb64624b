import assert from "node:assert/strict";
import { request } from "node:http";
import { describe, it } from "node:test";
import { Registry } from "prom-client";
import { startOperatorEndpoints } from "./operator-endpoints.js";

function get(address: string, path: string, host: string): Promise<number> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const req = request(
      { host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path, headers: { host } },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe("waypoint operator endpoints and DNS rebinding", () => {
  it("the admin listener answers only Hosts that are IP literals or localhost; metrics answer any", async () => {
    const endpoints = await startOperatorEndpoints({
      ip: "127.0.0.1",
      adminIp: "127.0.0.1",
      ports: { admin: 0, metrics: 0, readiness: 0 },
      isReady: () => true,
      registry: new Registry(),
      configDump: () => ({ secret: "routes" }),
    });
    try {
      const { admin, metrics } = endpoints.addresses;
      assert.equal(await get(admin, "/config_dump", "rebind.example.com"), 403);
      assert.equal(await get(admin, "/config_dump", `rebind.example.com:${admin.split(":")[1]}`), 403);
      assert.equal(await get(admin, "/config_dump", admin), 200);
      assert.equal(await get(admin, "/config_dump", "localhost:15000"), 200);
      // Prometheus scrapes the pod by whatever name its configuration uses: nothing to hide there.
      assert.equal(await get(metrics, "/metrics", "waypoint.shop.svc.cluster.local:15020"), 200);
    } finally {
      await endpoints.close();
    }
  });
});
