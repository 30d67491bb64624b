// Control plane replicas on (fake) Kubernetes: TokenReview authentication and node-scoped
// impersonation from the informer cache, one CA root shared through a Secret, one Lease leader that
// writes waypoint Gateway status and ServiceEntry addresses, and a replica that lost its lease still
// serving.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { generateKeyPair, SpiffeError, TrustBundle, verifySvid } from "@ambient/spiffe";
import { createCertificateServiceClient, createCsr } from "@ambient/spiffe/ca";
import { createXdsClient, TypeUrl, XdsError } from "@ambient/xds";
import { KubeConfig } from "@kubernetes/client-node";
import { controlPlaneChannel } from "../src/index.js";
import {
  type KubernetesControlPlane,
  startKubernetesControlPlane,
} from "../src/sources/kubernetes-control-plane.js";
import { createFakeApiServer, type FakeApiServer, type KubeJson } from "./fake-apiserver/fake-apiserver.js";

const ZTUNNEL_A_UID = "0b6c1b1e-0000-4000-8000-00000000000a";
const ZTUNNEL_K_UID = "0b6c1b1e-0000-4000-8000-00000000000b";

function pod(namespace: string, name: string, node: string, sa: string, ip: string, uid?: string): KubeJson {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, ...(uid === undefined ? {} : { uid }), labels: { app: name } },
    spec: { nodeName: node, serviceAccountName: sa, containers: [{ name: "c", image: "i" }] },
    status: { phase: "Running", podIP: ip },
  };
}

/** A bound token as TokenReview reports it: a ztunnel pod's (in istio-system unless said). */
function ztunnelToken(podName: string, uid: string, namespace = "istio-system") {
  return {
    username: `system:serviceaccount:${namespace}:ztunnel`,
    audiences: ["istio-ca"],
    extra: {
      "authentication.kubernetes.io/pod-name": [podName],
      "authentication.kubernetes.io/pod-uid": [uid],
    },
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("control plane replicas on kubernetes", { timeout: 60_000 }, () => {
  let server: FakeApiServer;
  const replicas: KubernetesControlPlane[] = [];

  before(async () => {
    server = await createFakeApiServer({
      bookmarkIntervalMs: 200,
      tokens: {
        "zt-a": ztunnelToken("ztunnel-a", ZTUNNEL_A_UID),
        // Bound to a ztunnel pod that has since been replaced by one of the same name (another uid).
        "zt-a-old": ztunnelToken("ztunnel-a", "0b6c1b1e-0000-4000-8000-0000000000ff"),
        "zt-wrong-audience": {
          ...ztunnelToken("ztunnel-a", ZTUNNEL_A_UID),
          audiences: ["https://kubernetes.default.svc"],
        },
        "sleep-token": { username: "system:serviceaccount:demo:sleep", audiences: ["istio-ca"] },
        // A ztunnel installed in kube-system: trusted only where the control plane is told to.
        "zt-kube-system": ztunnelToken("ztunnel-k", ZTUNNEL_K_UID, "kube-system"),
      },
    });
    server.apply({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "demo", labels: { "istio.io/dataplane-mode": "ambient" } },
    });
    server.apply(pod("istio-system", "ztunnel-a", "node-a", "ztunnel", "127.10.1.1", ZTUNNEL_A_UID));
    server.apply(pod("kube-system", "ztunnel-k", "node-a", "ztunnel", "127.10.1.4", ZTUNNEL_K_UID));
    server.apply(pod("demo", "sleep-0", "node-a", "sleep", "127.10.1.2"));
    server.apply(pod("demo", "echo-0", "node-b", "echo", "127.10.1.3"));
    server.apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { name: "waypoint", namespace: "demo" },
      spec: {
        gatewayClassName: "istio-waypoint",
        listeners: [{ name: "mesh", port: 15008, protocol: "HBONE" }],
      },
    });
    server.apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "waypoint", namespace: "demo" },
      spec: { clusterIP: "127.10.1.50", ports: [{ name: "mesh", port: 15008 }] },
    });
    // A ServiceEntry without addresses: the leader allocates one for its host.
    server.apply({
      apiVersion: "networking.istio.io/v1",
      kind: "ServiceEntry",
      metadata: { name: "external-api", namespace: "demo" },
      spec: {
        hosts: ["api.example.com"],
        ports: [{ number: 443, name: "tls", protocol: "TLS" }],
        resolution: "DNS",
        location: "MESH_EXTERNAL",
      },
    });
    for (const name of ["replica-1", "replica-2"]) {
      const kc = new KubeConfig();
      kc.loadFromString(server.kubeconfig());
      replicas.push(
        await startKubernetesControlPlane({
          kubeConfig: kc,
          identity: name,
          listen: "127.0.0.1:0",
          xdsDebounceMs: 5,
          statusIntervalMs: 100,
          // No test waits for a lease to expire (stepping down follows another holder's write): long
          // durations, so a stalled test process does not hand leadership over mid-test.
          leaderElection: { leaseDurationSeconds: 15, renewDeadlineMs: 10_000, retryPeriodMs: 100 },
          // Replicas read istio-ca-secret for a re-issued root this often (a 10-year root is not due).
          rootRotation: { checkIntervalSeconds: 0.2 },
        }),
      );
    }
  });

  after(async () => {
    for (const r of replicas) await r.close();
    await server.close();
  });

  async function requestSvid(
    replica: KubernetesControlPlane,
    token: string,
    identity: string,
  ): Promise<string[]> {
    const { controlPlane } = replica;
    const client = createCertificateServiceClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      token,
    });
    try {
      const keys = await generateKeyPair();
      const csr = await createCsr({ spiffeId: identity, privateKeyPem: keys.privateKeyPem });
      return await client.createCertificate(csr, { impersonatedIdentity: identity });
    } finally {
      client.close();
    }
  }

  it("shares one CA root, created once in istio-ca-secret", () => {
    const [a, b] = replicas as [KubernetesControlPlane, KubernetesControlPlane];
    assert.equal(a.controlPlane.rootCertPem, b.controlPlane.rootCertPem);
    assert.equal(a.caSecret, "istio-ca-secret");
    const secret = server.get("v1", "Secret", "istio-ca-secret", "istio-system");
    assert.ok(secret);
    const stored = Buffer.from(
      (secret.data as Record<string, string>)["ca-cert.pem"] ?? "",
      "base64",
    ).toString("utf8");
    assert.equal(stored.trim(), a.controlPlane.rootCertPem.trim());
  });

  it("issues a ztunnel-impersonated SVID for a pod on the ztunnel's node, checked by TokenReview, from either replica", async () => {
    for (const replica of replicas) {
      const chain = await requestSvid(replica, "zt-a", "spiffe://cluster.local/ns/demo/sa/sleep");
      const bundle = TrustBundle.fromPem("cluster.local", replica.controlPlane.rootCertPem);
      assert.equal(verifySvid(chain, bundle).toString(), "spiffe://cluster.local/ns/demo/sa/sleep");
    }
    const reviews = server.requests.filter((r) => r.path === "/apis/authentication.k8s.io/v1/tokenreviews");
    assert.ok(reviews.length >= 2);
  });

  const refusals: [string, string, string][] = [
    ["a pod on another node", "zt-a", "spiffe://cluster.local/ns/demo/sa/echo"],
    [
      "a token of a replaced ztunnel pod (uid differs)",
      "zt-a-old",
      "spiffe://cluster.local/ns/demo/sa/sleep",
    ],
    ["a token for another audience", "zt-wrong-audience", "spiffe://cluster.local/ns/demo/sa/sleep"],
    ["an unknown token", "forged", "spiffe://cluster.local/ns/demo/sa/sleep"],
    ["a workload acting for another", "sleep-token", "spiffe://cluster.local/ns/demo/sa/echo"],
    [
      "a ztunnel of an account it was not told to trust (kube-system/ztunnel)",
      "zt-kube-system",
      "spiffe://cluster.local/ns/demo/sa/sleep",
    ],
  ];
  for (const [name, token, identity] of refusals) {
    it(`refuses ${name}`, async () => {
      await assert.rejects(
        requestSvid(replicas[0] as KubernetesControlPlane, token, identity),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError, String(err));
          assert.equal(err.code, "ERR_UNAUTHENTICATED");
          return true;
        },
      );
    });
  }

  it("trusts the node agent accounts it is given instead of istio-system/ztunnel", async () => {
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    const replica = await startKubernetesControlPlane({
      kubeConfig: kc,
      identity: "replica-kube-system",
      listen: "127.0.0.1:0",
      trustedNodeAccounts: ["kube-system/ztunnel"],
      // Its own Lease: the shared one's leader stays as the other tests expect it.
      leaderElection: { name: "trusted-accounts-test" },
      rootRotation: false,
    });
    try {
      const chain = await requestSvid(replica, "zt-kube-system", "spiffe://cluster.local/ns/demo/sa/sleep");
      const bundle = TrustBundle.fromPem("cluster.local", replica.controlPlane.rootCertPem);
      assert.equal(verifySvid(chain, bundle).toString(), "spiffe://cluster.local/ns/demo/sa/sleep");
      await assert.rejects(requestSvid(replica, "zt-a", "spiffe://cluster.local/ns/demo/sa/sleep"), (err) => {
        assert.ok(err instanceof SpiffeError, String(err));
        assert.equal(err.code, "ERR_UNAUTHENTICATED");
        return true;
      });
    } finally {
      await replica.close();
    }
  });

  it("serves xDS only to callers TokenReview accepts", async () => {
    const replica = replicas[1] as KubernetesControlPlane;
    const connect = (token: string) => {
      const c = createXdsClient({
        address: replica.controlPlane.address,
        ...controlPlaneChannel(replica.controlPlane.rootCertPem),
        node: { id: "ztunnel~127.10.1.1~ztunnel-a.istio-system~istio-system.svc.cluster.local" },
        headers: { authorization: `Bearer ${token}` },
        initialBackoffMs: 50,
        maxBackoffMs: 200,
      });
      c.watch(TypeUrl.address);
      return c;
    };
    const good = connect("zt-a");
    try {
      await good.ready();
      assert.ok(
        [...good.resources(TypeUrl.address).values()].some((r) =>
          JSON.stringify(r.resource).includes("sleep-0"),
        ),
      );
    } finally {
      good.close();
    }
    const bad = connect("forged");
    try {
      const refused = await new Promise<XdsError | undefined>((resolve) => {
        bad.onConnection((connected, error) => {
          if (!connected && error !== undefined) resolve(error);
        });
      });
      assert.ok(refused instanceof XdsError);
      assert.match(refused.message, /authentication failed|UNAUTHENTICATED/i);
    } finally {
      bad.close();
    }
  });

  it("makes a pod HBONE once istio-cni has annotated it as redirected, not for its namespace's label", async () => {
    const replica = replicas[0] as KubernetesControlPlane;
    const tunnel = () =>
      replica.controlPlane.config().workloads.find((w) => w.workload.name === "echo-0")?.workload
        .tunnelProtocol;
    assert.equal(tunnel(), "NONE", "labelled, but nothing captured it yet");
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({
      ...echo,
      metadata: { ...echo.metadata, annotations: { "ambient.istio.io/redirection": "enabled" } },
    });
    await until("the annotated pod", () => tunnel() === "HBONE");
  });

  it("serves pods at the addresses the cluster gave them, whatever the range, as istiod does", async () => {
    const replica = replicas[0] as KubernetesControlPlane;
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    const { uid: _uid, resourceVersion: _rv, creationTimestamp: _created, ...metadata } = echo.metadata;
    // A pod as a CNI with its own pools would address it, far from the demo's 127.10.0.0/16.
    server.apply({
      ...echo,
      metadata: { ...metadata, name: "echo-cni" },
      status: { ...(echo.status as object), podIP: "10.244.7.9", podIPs: [{ ip: "10.244.7.9" }] },
    });
    const served = () => replica.controlPlane.config().workloads.find((w) => w.workload.name === "echo-cni");
    await until("the pod at 10.244.7.9", () => served() !== undefined);
    assert.deepEqual([...(served()?.workload.addresses?.[0] ?? [])], [10, 244, 7, 9]);
    // An unspecified address is no pod's, whatever the ranges.
    server.apply({
      ...echo,
      metadata: { ...metadata, name: "echo-nowhere" },
      status: { ...(echo.status as object), podIP: "0.0.0.0", podIPs: [{ ip: "0.0.0.0" }] },
    });
    await until("the refused pod reported", () =>
      replica.controlPlane.config().issues.some((i) => i.source === "Pod/demo/echo-nowhere"),
    );
    server.remove("v1", "Pod", "echo-cni", "demo");
    server.remove("v1", "Pod", "echo-nowhere", "demo");
  });

  it("elects one leader, which writes the waypoint Gateway's status address", async () => {
    await until("one leader", () => replicas.filter((r) => r.isLeader()).length === 1);
    await until("gateway status", () => {
      const gw = server.get("gateway.networking.k8s.io/v1", "Gateway", "waypoint", "demo");
      return (
        JSON.stringify((gw?.status as { addresses?: unknown } | undefined)?.addresses) ===
        JSON.stringify([{ type: "IPAddress", value: "127.10.1.50" }])
      );
    });
    const patches = server.requests.filter((r) => r.method === "PATCH" && r.path.includes("/gateways/"));
    assert.equal(patches.length, 1, "written once, by the leader");
    // The root for ztunnels (istio-system) and for the waypoint's pods (demo).
    for (const ns of ["istio-system", "demo"]) {
      const cm = server.get("v1", "ConfigMap", "istio-ca-root-cert", ns);
      assert.equal(
        (cm?.data as Record<string, string> | undefined)?.["root-cert.pem"],
        replicas[0]?.controlPlane.rootCertPem,
      );
    }
    // Read back through the informers: every replica now serves the waypoint's address.
    for (const r of replicas) {
      await until("waypoint address served", () =>
        r.controlPlane.config().issues.every((i) => !i.message.includes("waypoint has no IPv4")),
      );
    }
  });

  it("has the leader allocate ServiceEntry addresses into status, which every replica serves", async () => {
    await until("service entry status", () => {
      const se = server.get("networking.istio.io/v1", "ServiceEntry", "external-api", "demo");
      return (
        JSON.stringify((se?.status as { addresses?: unknown } | undefined)?.addresses) ===
        JSON.stringify([{ host: "api.example.com", value: "240.240.0.1" }])
      );
    });
    for (const r of replicas) {
      await until("the allocated VIP served", () =>
        r.controlPlane
          .config()
          .services.some((s) => s.key === "demo/api.example.com" && s.aliases.includes("/240.240.0.1")),
      );
    }
    // A status written is not written again once the informers show it.
    await new Promise((r) => setTimeout(r, 400));
    const patches = server.requests.filter(
      (r) => r.method === "PATCH" && r.path.includes("/serviceentries/"),
    );
    assert.equal(patches.length, 1, "written once, by the leader");
    assert.match(patches[0]?.path ?? "", /\/serviceentries\/external-api\/status$/);
  });

  it("re-issues the root on the leader, writes it to istio-ca-secret, and every replica takes it", async () => {
    await until("one leader", () => replicas.filter((r) => r.isLeader()).length === 1);
    const leader = replicas.find((r) => r.isLeader()) as KubernetesControlPlane;
    const follower = replicas.find((r) => !r.isLeader()) as KubernetesControlPlane;
    const oldRoot = leader.controlPlane.rootCertPem;
    await leader.controlPlane.rotateRoot();
    const both = leader.controlPlane.rootCertPem;
    const newRoot = both.slice(oldRoot.length);
    assert.ok(both.startsWith(oldRoot) && newRoot.includes("BEGIN CERTIFICATE"));
    const data = (server.get("v1", "Secret", "istio-ca-secret", "istio-system")?.data ?? {}) as Record<
      string,
      string
    >;
    const decoded = (key: string) => Buffer.from(data[key] ?? "", "base64").toString("utf8");
    assert.equal(decoded("ca-cert.pem"), newRoot);
    assert.equal(decoded("root-cert.pem"), both);
    // The follower takes the new root from the Secret and answers with both roots.
    await until("the follower took the new root", () => follower.controlPlane.rootCertPem === both);
    const chain = await requestSvid(follower, "zt-a", "spiffe://cluster.local/ns/demo/sa/sleep");
    assert.equal(chain.at(-1), both);
    assert.equal(
      verifySvid(chain, TrustBundle.fromPem("cluster.local", newRoot)).toString(),
      "spiffe://cluster.local/ns/demo/sa/sleep",
    );
    // The leader publishes both roots where ztunnels and waypoints read them.
    await until("istio-ca-root-cert lists both roots", () =>
      ["istio-system", "demo"].every(
        (ns) =>
          (
            server.get("v1", "ConfigMap", "istio-ca-root-cert", ns)?.data as
              | Record<string, string>
              | undefined
          )?.["root-cert.pem"] === both,
      ),
    );
    const secretWrites = server.requests.filter(
      (r) => r.method === "PUT" && r.path.endsWith("/secrets/istio-ca-secret"),
    );
    assert.equal(secretWrites.length, 1, "written once, by the replica that rotated");
  });

  it("keeps serving on a replica that lost its lease", async () => {
    const leader = replicas.find((r) => r.isLeader()) as KubernetesControlPlane;
    const lease = server.get(
      "coordination.k8s.io/v1",
      "Lease",
      "ambient-control-plane-leader",
      "istio-system",
    ) as KubeJson;
    // Another holder takes the lease (as after a network partition of this replica).
    const takeover = () =>
      server.apply({
        ...lease,
        spec: {
          ...(lease.spec as object),
          holderIdentity: "intruder",
          renewTime: new Date().toISOString(),
          leaseDurationSeconds: 30,
        },
      });
    takeover();
    await until("stepped down", () => !leader.isLeader());
    assert.ok(replicas.every((r) => !r.isLeader()));
    const chain = await requestSvid(leader, "zt-a", "spiffe://cluster.local/ns/demo/sa/sleep");
    assert.equal(
      verifySvid(chain, TrustBundle.fromPem("cluster.local", leader.controlPlane.rootCertPem)).toString(),
      "spiffe://cluster.local/ns/demo/sa/sleep",
    );
    // And it still follows the cluster.
    server.apply(pod("demo", "late-0", "node-a", "sleep", "127.10.1.9"));
    await until("new pod served", () =>
      leader.controlPlane.config().workloads.some((w) => w.workload.name === "late-0"),
    );
  });
});
