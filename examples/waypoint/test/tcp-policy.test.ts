// A waypoint applies its policies to what it carries as TCP the way Istio's waypoint (an Envoy with a
// network RBAC filter) does: a DENY rule's HTTP-only parts cannot be seen on a connection, so the rule
// is enforced without them, and a CUSTOM policy with no authorizer at the waypoint fails closed.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer as createNetServer, type Server as NetServer } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  loopbackSubnet,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();

const manifests = `
${shopWithWaypoint(ip(6))}
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { nodeName: node-a, serviceAccountName: client }
status: { podIP: ${ip(2)} }
---
apiVersion: v1
kind: Pod
metadata: { name: other, namespace: shop, labels: { app: other } }
spec: { nodeName: node-a, serviceAccountName: other }
status: { podIP: ${ip(3)} }
---
apiVersion: v1
kind: Pod
metadata: { name: cache-0, namespace: shop, labels: { app: cache } }
spec: { nodeName: node-b, serviceAccountName: cache }
status: { podIP: ${ip(11)} }
---
apiVersion: v1
kind: Service
metadata: { name: cache, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec: { clusterIP: ${ip(103)}, selector: { app: cache }, ports: [{ name: redis, port: 6379 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: queue-0, namespace: shop, labels: { app: queue } }
spec: { nodeName: node-b, serviceAccountName: queue }
status: { podIP: ${ip(12)} }
---
apiVersion: v1
kind: Service
metadata: { name: queue, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec: { clusterIP: ${ip(104)}, selector: { app: queue }, ports: [{ name: redis, port: 6380 }] }
---
# A connection has no path: this denies every connection from other (and none from client).
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: other-no-admin, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  action: DENY
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/shop/sa/other"] } }]
      to: [{ operation: { paths: ["/admin"] } }]
---
# No authorizer for this provider at the waypoint: every connection to queue is refused.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: queue-ext-authz, namespace: shop }
spec:
  targetRefs: [{ group: "", kind: Service, name: queue }]
  action: CUSTOM
  provider: { name: ext-authz }
  rules: [{ to: [{ operation: { methods: ["POST"] } }] }]
`;

/** A Redis-like server: answers each chunk with `+PONG <n>`. */
async function pong(host: string, port: number): Promise<NetServer> {
  const server = createNetServer((socket) => {
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => socket.write(`+PONG ${chunk.length}\r\n`));
  });
  server.listen(port, host);
  await once(server, "listening");
  return server;
}

describe("waypoint policies on connections carried as TCP", { timeout: 60_000 }, () => {
  let mesh: TestMesh;
  let cache: NetServer;
  let queue: NetServer;

  before(async () => {
    cache = await pong(ip(11), 6379);
    queue = await pong(ip(12), 6380);
    mesh = await startTestMesh({
      manifests,
      tempPrefix: "waypoint-tcp-policy-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: { gateway: { name: "waypoint", namespace: "shop" }, ip: ip(6) },
    });
  });

  after(async () => {
    await mesh?.close();
    cache?.close();
    queue?.close();
  });

  /** Sends a Redis PING from a pod to a Service address; the text received ("" when refused). */
  const ping = async (from: string, to: string): Promise<string> => {
    const c = await socks5Dial({ proxy: mesh.socks5, from, to });
    const closed = once(c.socket, "close");
    c.socket.on("data", () => {
      if (c.text().endsWith("\r\n")) c.socket.end();
    });
    c.socket.write("*1\r\n$4\r\nPING\r\n");
    // A refused connection is reset, which is how it ends.
    await closed.catch(() => {});
    return c.text();
  };

  it("enforces a DENY rule without its HTTP part: the principal alone decides", async () => {
    assert.equal(await ping(ip(2), `${ip(103)}:6379`), "+PONG 14\r\n");
    assert.equal(await ping(ip(3), `${ip(103)}:6379`), "");
  });

  it("refuses connections a CUSTOM policy matches when the waypoint has no authorizer", async () => {
    assert.equal(await ping(ip(2), `${ip(104)}:6380`), "");
  });

  it("counts each refusal in Istio's TCP metrics without a response flag, as Envoy does", async () => {
    const lines = (await mesh.waypoint.metricsText()).split("\n");
    // other was refused by the DENY (at cache), client by the CUSTOM policy (at queue).
    const refused = (source: string) =>
      lines.filter(
        (l) =>
          l.startsWith("istio_tcp_connections_closed_total{") &&
          l.includes('response_flags="-"') &&
          l.includes(`source_workload="${source}"`),
      );
    assert.match(refused("other")[0] ?? "", / 1$/, lines.join("\n"));
    assert.match(refused("client")[0] ?? "", / 1$/, lines.join("\n"));
  });

  it("says why in each refused tunnel's connection termination details, as Envoy's network RBAC filter does", async () => {
    const res = await fetch(`http://${mesh.waypoint.operatorAddresses.admin}/recent_requests`);
    const recent = (await res.json()) as { requests: { fields: Record<string, unknown> }[] };
    const closed = recent.requests
      .map((r) => r.fields)
      .filter((f) => f.connection_termination_details !== "-")
      .map((f) => [f.response_flags, f.response_code_details, f.connection_termination_details]);
    assert.deepEqual(closed, [
      // The DENY rule that matched, named as Istio names it in Envoy's RBAC config.
      ["-", "-", "rbac_access_denied_matched_policy[ns[shop]-policy[other-no-admin]-rule[0]]"],
      // A CUSTOM policy the waypoint has no authorizer for.
      [
        "-",
        "-",
        "rbac_access_denied_matched_policy[istio-ext-authz-ns[shop]-policy[queue-ext-authz]-rule[0]-deny-due-to-bad-CUSTOM-action]",
      ],
    ]);
  });
});
