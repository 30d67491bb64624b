// A small mesh that random edits walk through, for the tests that compare a reload translated from a
// change set with a translation of every object. Deterministic for a seed. The edits favour Pods (what
// a cluster changes most) and include the cases the change-set path must refuse or get right: two pods
// on one IP, a pod without an IP or outside the pod range, a pod moving between Services, nodes and
// namespaces, a duplicate uid, a pod on a WorkloadEntry's or ServiceEntry endpoint's address, the last
// pod under a STRICT PeerAuthentication leaving, a pod turning unready, being deleted or finishing
// (freeing its IP), host-network pods sharing their node's address, and changes to Services,
// Namespaces, policies and the EndpointSlices of Services without a selector.
import type { KubeObject } from "../src/manifests.js";
import type { ObjectChange } from "../src/sources/config-source.js";

/** mulberry32: a 32-bit seeded generator, enough to pick edits. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMESPACES = ["ns-a", "ns-b", "ns-c"];
const APPS = ["api", "web", "db", "cache", "none"];
const NODES = ["node-0", "node-1", "node-2", "node-3"];
/** The addresses of the WorkloadEntry and the ServiceEntry endpoint, which pods sometimes take. */
export const ENTRY_ADDRESSES: readonly string[] = ["127.10.0.77", "127.10.1.150"];

function id(o: KubeObject): string {
  return `${o.kind}/${o.metadata.namespace ?? "default"}/${o.metadata.name}`;
}

/** The mesh's objects in a fixed order (kind, then age), edited in place as a cluster would be. */
export class RandomMesh {
  objects: KubeObject[] = [];
  private podCount = 0;
  private clock = 0;

  constructor(
    private readonly random: () => number,
    pods: number,
  ) {
    const ns = (name: string, labels: Record<string, string>): KubeObject => ({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name, labels },
      source: `Namespace/${name}`,
    });
    this.objects.push(
      ns("ns-a", { "istio.io/dataplane-mode": "ambient" }),
      ns("ns-b", {}),
      ns("ns-c", { "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint" }),
      ns("istio-system", {}),
      ...NODES.map(
        (name, i): KubeObject => ({
          apiVersion: "v1",
          kind: "Node",
          metadata: {
            name,
            labels:
              i < 2 ? { "topology.kubernetes.io/region": "r1", "topology.kubernetes.io/zone": `z${i}` } : {},
          },
          source: `Node/${name}`,
        }),
      ),
    );
    let vip = 1;
    for (const namespace of NAMESPACES) {
      for (const app of APPS.slice(0, 4)) {
        this.objects.push(this.service(namespace, app, { app }, vip++));
      }
      // Two labels in the selector, and a Service that selects nothing.
      this.objects.push(this.service(namespace, "web-v2", { app: "web", version: "v2" }, vip++));
      this.objects.push(this.service(namespace, "empty", undefined, vip++));
    }
    this.objects.push(
      {
        apiVersion: "security.istio.io/v1",
        kind: "PeerAuthentication",
        metadata: { name: "default", namespace: "ns-a" },
        spec: { mtls: { mode: "STRICT" } },
        source: "PeerAuthentication/ns-a/default",
      },
      {
        apiVersion: "security.istio.io/v1",
        kind: "PeerAuthentication",
        metadata: { name: "db-strict", namespace: "ns-b" },
        spec: { selector: { matchLabels: { app: "db" } }, mtls: { mode: "STRICT" } },
        source: "PeerAuthentication/ns-b/db-strict",
      },
      {
        apiVersion: "security.istio.io/v1",
        kind: "AuthorizationPolicy",
        metadata: { name: "api-allow", namespace: "ns-b" },
        spec: {
          selector: { matchLabels: { app: "api" } },
          action: "ALLOW",
          rules: [{ from: [{ source: { principals: ["cluster.local/ns/ns-a/sa/web"] } }] }],
        },
        source: "AuthorizationPolicy/ns-b/api-allow",
      },
      {
        apiVersion: "security.istio.io/v1",
        kind: "AuthorizationPolicy",
        metadata: { name: "cache-deny", namespace: "istio-system" },
        spec: {
          selector: { matchLabels: { app: "cache" } },
          action: "DENY",
          rules: [{ to: [{ operation: { ports: ["6379"] } }] }],
        },
        source: "AuthorizationPolicy/istio-system/cache-deny",
      },
      {
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "Gateway",
        metadata: {
          name: "waypoint",
          namespace: "ns-c",
          annotations: { "ambient.dev/address": "127.10.9.9" },
        },
        spec: { gatewayClassName: "istio-waypoint" },
        source: "Gateway/ns-c/waypoint",
      },
      {
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        metadata: { name: "web-split", namespace: "ns-a" },
        spec: {
          parentRefs: [{ group: "", kind: "Service", name: "web", port: 80 }],
          rules: [
            {
              backendRefs: [
                { name: "web", port: 80, weight: 90 },
                { name: "web-v2", port: 80, weight: 10 },
              ],
            },
          ],
        },
        source: "HTTPRoute/ns-a/web-split",
      },
    );
    // A VM on an address pods may also get, behind the api Services, and a ServiceEntry whose selector
    // picks cache pods, with an endpoint of its own.
    this.objects.push(
      {
        apiVersion: "networking.istio.io/v1",
        kind: "ServiceEntry",
        metadata: { name: "cache-alias", namespace: "ns-b" },
        spec: {
          hosts: ["cache.alias.example"],
          addresses: ["127.30.1.1"],
          resolution: "STATIC",
          ports: [{ number: 6379, name: "redis", targetPort: 8080 }],
          workloadSelector: { labels: { app: "cache" } },
        },
        source: "ServiceEntry/ns-b/cache-alias",
      },
      {
        apiVersion: "networking.istio.io/v1",
        kind: "ServiceEntry",
        metadata: { name: "external", namespace: "ns-a" },
        spec: {
          hosts: ["external.example"],
          addresses: ["127.30.1.2"],
          resolution: "STATIC",
          ports: [{ number: 443, name: "tls" }],
          endpoints: [{ address: ENTRY_ADDRESSES[1] }],
        },
        source: "ServiceEntry/ns-a/external",
      },
      {
        apiVersion: "networking.istio.io/v1",
        kind: "WorkloadEntry",
        metadata: { name: "vm-1", namespace: "ns-a", labels: { app: "api" } },
        spec: { address: ENTRY_ADDRESSES[0], serviceAccount: "vm", ports: { http: 9090 } },
        source: "WorkloadEntry/ns-a/vm-1",
      },
    );
    // The selector-less Services' endpoints: one not a pod, and pods it names (which then list the
    // Service; the first few pods of any namespace, by name and uid, so some names miss).
    for (const namespace of NAMESPACES)
      this.objects.push(this.slice(namespace, "127.10.1.160", "true", [0, 3]));
    for (let i = 0; i < pods; i++) this.objects.push(this.newPod());
  }

  private slice(namespace: string, address: string, ready: string, pods: readonly number[]): KubeObject {
    return {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "empty-1", namespace, labels: { "kubernetes.io/service-name": "empty" } },
      addressType: "IPv4",
      endpoints: [
        { addresses: [address], conditions: { ready: ready === "true" } },
        ...pods.map((n) => ({
          addresses: ["127.10.0.5"],
          targetRef: { kind: "Pod", name: `pod-${n}`, namespace, uid: `uid-pod-${n}` },
        })),
      ],
      ports: [{ name: "http", port: 8080, protocol: "TCP" }],
      source: `EndpointSlice/${namespace}/empty-1`,
    };
  }

  private service(
    namespace: string,
    name: string,
    selector: Record<string, string> | undefined,
    vip: number,
  ): KubeObject {
    return {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace },
      spec: {
        ...(selector === undefined ? {} : { selector }),
        clusterIP: `127.30.0.${vip}`,
        ports: [
          { name: "http", port: 80, targetPort: "http" },
          { name: "metrics", port: 9090, targetPort: 9090 },
        ],
      },
      source: `Service/${namespace}/${name}`,
    };
  }

  private pick<T>(list: readonly T[]): T {
    return list[Math.floor(this.random() * list.length)] as T;
  }

  /** Mostly valid IPs from a small range (so two pods sometimes meet), sometimes none or a bad one. */
  private ip(): string {
    const r = this.random();
    if (r < 0.05) return "";
    if (r < 0.08) return "10.99.0.1";
    if (r < 0.085) return this.pick(ENTRY_ADDRESSES);
    return `127.10.${Math.floor(this.random() * 2)}.${1 + Math.floor(this.random() * 200)}`;
  }

  private labels(): Record<string, string> {
    const labels: Record<string, string> = { app: this.pick(APPS) };
    if (this.random() < 0.3) labels.version = this.pick(["v1", "v2"]);
    if (this.random() < 0.1) labels["istio.io/dataplane-mode"] = this.pick(["ambient", "none"]);
    return labels;
  }

  private newPod(namespace = this.pick(NAMESPACES)): KubeObject {
    const name = `pod-${this.podCount++}`;
    this.clock++;
    const pod: KubeObject = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name,
        namespace,
        uid: `uid-${name}`,
        labels: this.labels(),
        creationTimestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, this.clock)).toISOString(),
      },
      spec: {
        nodeName: this.random() < 0.05 ? "" : this.pick(NODES),
        serviceAccountName: this.pick(["default", "web", "api"]),
        containers: [{ ports: [{ name: "http", containerPort: this.pick([8080, 8081]) }] }],
      },
      status: { podIP: this.ip() },
      source: `Pod/${namespace}/${name}`,
    };
    // Every eleventh pod is a host-network pod: its node's address, which the node's other such pods
    // share. Chosen by number, so the random draws stay those of the other pods.
    const node = pod.spec?.nodeName as string;
    if (this.podCount % 11 === 4 && node !== "") {
      pod.spec = { ...pod.spec, hostNetwork: true };
      pod.status = { podIP: `127.20.0.${1 + NODES.indexOf(node)}` };
    }
    return pod;
  }

  private pods(): KubeObject[] {
    return this.objects.filter((o) => o.kind === "Pod");
  }

  /** One random edit, applied to `objects`: what changed. */
  edit(nonPodRate: number): ObjectChange[] {
    const replace = (before: KubeObject, after: KubeObject | undefined): ObjectChange => {
      const at = this.objects.indexOf(before);
      if (after === undefined) this.objects.splice(at, 1);
      else this.objects[at] = after;
      return { id: id(before), kind: before.kind, before, after };
    };
    if (this.random() < nonPodRate) {
      const r = this.random();
      if (r < 0.4) {
        const service = this.pick(this.objects.filter((o) => o.kind === "Service"));
        const selector = this.random() < 0.8 ? { app: this.pick(APPS) } : undefined;
        const spec = { ...service.spec };
        if (selector === undefined) delete spec.selector;
        else spec.selector = selector;
        return [replace(service, { ...service, spec })];
      }
      if (r < 0.7) {
        const ns = this.pick(this.objects.filter((o) => o.kind === "Namespace"));
        const labels = { ...ns.metadata.labels };
        if (labels["istio.io/dataplane-mode"] === undefined) labels["istio.io/dataplane-mode"] = "ambient";
        else delete labels["istio.io/dataplane-mode"];
        return [replace(ns, { ...ns, metadata: { ...ns.metadata, labels } })];
      }
      if (r < 0.8) {
        const slice = this.pick(this.objects.filter((o) => o.kind === "EndpointSlice"));
        const address = this.pick(["127.10.1.160", "127.10.1.161", "127.10.0.5"]);
        const pods = [0, 1, 2, 3, 4, 5, 6, 7].filter(() => this.random() < 0.4);
        const ready = this.pick(["true", "false"]);
        const next = this.slice(slice.metadata.namespace ?? "default", address, ready, pods);
        return [replace(slice, next)];
      }
      const policy = this.pick(this.objects.filter((o) => o.kind === "AuthorizationPolicy"));
      const spec = { ...policy.spec, selector: { matchLabels: { app: this.pick(APPS) } } };
      return [replace(policy, { ...policy, spec })];
    }
    const pods = this.pods();
    const r = this.random();
    if (r < 0.2 || pods.length < 5) {
      const pod = this.newPod();
      // Pods are ordered by age: a new one goes after every other pod.
      const lastPod = this.objects.lastIndexOf(pods[pods.length - 1] as KubeObject);
      this.objects.splice(lastPod + 1, 0, pod);
      return [{ id: id(pod), kind: "Pod", before: undefined, after: pod }];
    }
    const pod = this.pick(pods);
    if (r < 0.35) return [replace(pod, undefined)];
    const metadata = { ...pod.metadata };
    const spec = { ...pod.spec };
    const status = { ...pod.status };
    const what = this.random();
    if (what < 0.3) status.podIP = this.ip();
    else if (what < 0.5) metadata.labels = this.labels();
    else if (what < 0.62) spec.nodeName = this.pick(NODES);
    else if (what < 0.72) spec.serviceAccountName = this.pick(["default", "web", "api", "db"]);
    else if (what < 0.75) metadata.uid = `uid-${this.pick(pods).metadata.name}`;
    else if (what < 0.8) metadata.annotations = { touched: String(this.random()) };
    // Its lifecycle: readiness flips, a deletion starts, it finishes (its IP free for others) or runs again.
    else if (what < 0.9) status.conditions = [{ type: "Ready", status: this.pick(["True", "False"]) }];
    else if (what < 0.94) metadata.deletionTimestamp = "2026-01-02T00:00:00Z";
    else status.phase = this.pick(["Succeeded", "Failed", "Pending", "Running"]);
    return [replace(pod, { ...pod, metadata, spec, status })];
  }

  /** One to three edits at once, merged into one change set per object (as a source reports them). */
  edits(nonPodRate: number): ObjectChange[] {
    const byId = new Map<string, ObjectChange>();
    const n = 1 + Math.floor(this.random() * 3);
    for (let i = 0; i < n; i++) {
      for (const c of this.edit(nonPodRate)) {
        const first = byId.get(c.id);
        byId.set(c.id, { ...c, before: first === undefined ? c.before : first.before });
      }
    }
    return [...byId.values()].filter((c) => c.before !== c.after);
  }
}
