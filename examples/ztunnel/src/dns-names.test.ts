import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Service, Workload } from "@ambient/xds";
import { testService, testWorkload } from "../test/fixtures.js";
import { type DnsClient, kubernetesExpansions, type MeshAnswer, resolveMeshName } from "./dns-names.js";
import { parseIpv4, parseIpv6 } from "./ip-address.js";
import { WorkloadStore } from "./workload-store.js";

function bytes(ip: string): Uint8Array {
  const parsed = ip.includes(":") ? parseIpv6(ip) : parseIpv4(ip);
  if (parsed === undefined) throw new Error(`not an IP: ${ip}`);
  return parsed;
}

const PORTS: Service["ports"] = [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }];

function service(namespace: string, hostname: string, vips: string[], extra: Partial<Service> = {}): Service {
  return testService(hostname.split(".")[0] ?? hostname, "0.0.0.0", PORTS, {
    namespace,
    hostname,
    addresses: vips.map((v) => ({ network: "", address: bytes(v) })),
    ipFamilies: "AUTOMATIC",
    ...extra,
  });
}

function pod(
  name: string,
  namespace: string,
  ips: string[],
  serviceKeys: string[],
  healthy = true,
): Workload {
  return testWorkload(name, "node-a", "0.0.0.0", {
    namespace,
    addresses: ips.map(bytes),
    services: Object.fromEntries(serviceKeys.map((k) => [k, { ports: [] }])),
    status: healthy ? "HEALTHY" : "UNHEALTHY",
  });
}

function mesh(): WorkloadStore {
  const store = new WorkloadStore();
  const add = (s: Service) => store.upsert(`${s.namespace}/${s.hostname}`, { service: s });
  add(service("ns1", "productpage.ns1.svc.cluster.local", ["10.0.0.9"]));
  add(service("ns2", "example.ns2.svc.cluster.local", ["10.0.0.10"]));
  // The same hostname in two namespaces (a ServiceEntry host each).
  add(service("ns1", "api.example.com", ["240.240.0.1"]));
  add(service("ns2", "api.example.com", ["240.240.0.2"]));
  add(service("ns3", "*.wild.example.com", ["240.240.0.3"]));
  add(service("ns2", "dual.ns2.svc.cluster.local", ["10.0.0.11", "fd00::11"]));
  add(service("ns2", "v4.ns2.svc.cluster.local", ["10.0.0.12"], { ipFamilies: "IPV4_ONLY" }));
  add(service("ns2", "private.ns2.svc.cluster.local", ["10.0.0.13"], { visibility: "NAMESPACE" }));
  add(service("ns2", "db.ns2.svc.cluster.local", []));
  add(service("ns2", "noaddress.example.com", []));
  // A ServiceEntry host in the form of a pod's hostname and subdomain.
  add(service("ns2", "web-0.web.ns2.svc.cluster.local", ["240.240.0.9"]));
  add(
    service("ns2", "remote.ns2.svc.cluster.local", [], {
      addresses: [
        { network: "other", address: bytes("10.9.0.1") },
        { network: "", address: bytes("10.0.0.14") },
      ],
    }),
  );
  store.upsert("db-0", {
    workload: pod("db-0", "ns2", ["10.1.0.1", "fd00::1:1"], ["ns2/db.ns2.svc.cluster.local"]),
  });
  store.upsert("db-1", { workload: pod("db-1", "ns2", ["10.1.0.2"], ["ns2/db.ns2.svc.cluster.local"]) });
  store.upsert("db-2", {
    workload: pod("db-2", "ns2", ["10.1.0.3"], ["ns2/db.ns2.svc.cluster.local"], false),
  });
  return store;
}

const ns1: DnsClient = { namespace: "ns1", network: "" };
const ns2: DnsClient = { namespace: "ns2", network: "" };

function ask(client: DnsClient, name: string, family: 4 | 6 = 4): MeshAnswer {
  const answer = resolveMeshName(mesh(), client, name, family);
  return answer.kind === "answer" ? { ...answer, addresses: [...answer.addresses].sort() } : answer;
}

describe("resolveMeshName", () => {
  it("answers a Service by every spelling a pod in its namespace may use", () => {
    for (const name of [
      "productpage.ns1.svc.cluster.local",
      "productpage.ns1.svc.cluster.local.",
      "ProductPage.NS1.svc.cluster.local",
      "productpage.ns1.svc",
      "productpage.ns1",
      "productpage",
    ]) {
      assert.deepEqual(
        ask(ns1, name),
        { kind: "answer", service: "ns1/productpage.ns1.svc.cluster.local", addresses: ["10.0.0.9"] },
        name,
      );
    }
  });

  it("answers a host in a pod's hostname.subdomain form by its short spellings", () => {
    const web = {
      kind: "answer",
      service: "ns2/web-0.web.ns2.svc.cluster.local",
      addresses: ["240.240.0.9"],
    };
    for (const name of ["web-0.web", "web-0.web.ns2", "web-0.web.ns2.svc"]) {
      assert.deepEqual(ask(ns2, name), web, name);
    }
    // hostname.subdomain is the asking pod's namespace only.
    assert.deepEqual(ask(ns1, "web-0.web.ns2"), web);
    assert.deepEqual(ask(ns1, "web-0.web"), { kind: "forward" });
  });

  it("answers another namespace's Service by name.namespace but not by its short name", () => {
    assert.deepEqual(ask(ns1, "example.ns2").kind, "answer");
    assert.deepEqual(ask(ns1, "example.ns2.svc").kind, "answer");
    assert.deepEqual(ask(ns1, "example"), { kind: "forward" });
  });

  it("maps a name with a search domain appended to the name without it (CNAME)", () => {
    assert.deepEqual(ask(ns1, "productpage.ns1.ns1.svc.cluster.local"), {
      kind: "answer",
      service: "ns1/productpage.ns1.svc.cluster.local",
      canonicalName: "productpage.ns1",
      addresses: ["10.0.0.9"],
    });
    assert.deepEqual(ask(ns1, "api.example.com.svc.cluster.local"), {
      kind: "answer",
      service: "ns1/api.example.com",
      canonicalName: "api.example.com",
      addresses: ["240.240.0.1"],
    });
    // An external name with a search domain appended is not a mesh name: forwarded as asked.
    assert.deepEqual(ask(ns1, "www.example.org.ns1.svc.cluster.local"), { kind: "forward" });
  });

  it("prefers the client's namespace for a hostname several namespaces have", () => {
    assert.deepEqual(ask(ns2, "api.example.com"), {
      kind: "answer",
      service: "ns2/api.example.com",
      addresses: ["240.240.0.2"],
    });
    // From a third namespace: the first by namespace.
    const other = ask({ namespace: "ns9", network: "" }, "api.example.com");
    assert.equal(other.kind === "answer" && other.service, "ns1/api.example.com");
  });

  it("prefers the canonical Service for a hostname the client's namespace does not have", () => {
    // A ServiceEntry elsewhere that reuses a Kubernetes Service's hostname, in a namespace that
    // sorts first: pods outside both namespaces must still get the Kubernetes Service.
    const store = new WorkloadStore();
    const add = (s: Service) => store.upsert(`${s.namespace}/${s.hostname}`, { service: s });
    add(service("aaa", "reviews.bookinfo.svc.cluster.local", ["240.240.0.9"], { canonical: false }));
    add(service("bookinfo", "reviews.bookinfo.svc.cluster.local", ["10.0.0.30"], { canonical: true }));
    add(service("aaa", "shared.example.com", ["240.240.0.10"], { canonical: false }));
    add(service("bbb", "shared.example.com", ["240.240.0.11"], { canonical: true }));
    add(service("ccc", "shared.example.com", ["240.240.0.12"], { canonical: false }));
    const from = (namespace: string, name: string) => {
      const answer = resolveMeshName(store, { namespace, network: "" }, name, 4);
      return answer.kind === "answer" ? [answer.service, answer.addresses] : answer.kind;
    };
    assert.deepEqual(from("ns1", "reviews.bookinfo"), [
      "bookinfo/reviews.bookinfo.svc.cluster.local",
      ["10.0.0.30"],
    ]);
    assert.deepEqual(from("ns1", "shared.example.com"), ["bbb/shared.example.com", ["240.240.0.11"]]);
    // The client's own namespace still wins over the canonical one.
    assert.deepEqual(from("aaa", "reviews.bookinfo"), [
      "aaa/reviews.bookinfo.svc.cluster.local",
      ["240.240.0.9"],
    ]);
    assert.deepEqual(from("ccc", "shared.example.com"), ["ccc/shared.example.com", ["240.240.0.12"]]);
  });

  it("matches wildcard hosts without a CNAME", () => {
    assert.deepEqual(ask(ns1, "a.wild.example.com"), {
      kind: "answer",
      service: "ns3/*.wild.example.com",
      addresses: ["240.240.0.3"],
    });
    const suffixed = ask(ns1, "a.wild.example.com.ns1.svc.cluster.local");
    assert.equal(suffixed.kind === "answer" && suffixed.canonicalName, undefined);
    assert.deepEqual(ask(ns1, "wild.example.com"), { kind: "forward" });
  });

  it("answers the family asked for, and nothing for the family a single-stack Service lacks", () => {
    assert.deepEqual((ask(ns2, "dual", 6) as { addresses: string[] }).addresses, ["fd00::11"]);
    assert.deepEqual((ask(ns2, "dual", 4) as { addresses: string[] }).addresses, ["10.0.0.11"]);
    assert.deepEqual(ask(ns2, "v4", 6), {
      kind: "answer",
      service: "ns2/v4.ns2.svc.cluster.local",
      addresses: [],
    });
    // A Service with only IPv4 VIPs answers AAAA with no records (NOERROR), not a forward.
    assert.deepEqual(ask(ns1, "productpage", 6), {
      kind: "answer",
      service: "ns1/productpage.ns1.svc.cluster.local",
      addresses: [],
    });
  });

  it("answers a headless Service with its healthy pods, and forwards a ServiceEntry without addresses", () => {
    assert.deepEqual((ask(ns2, "db") as { addresses: string[] }).addresses, ["10.1.0.1", "10.1.0.2"]);
    assert.deepEqual((ask(ns2, "db", 6) as { addresses: string[] }).addresses, ["fd00::1:1"]);
    assert.deepEqual(ask(ns2, "noaddress.example.com"), { kind: "forward" });
  });

  it("answers a headless Service that publishes not-ready addresses with its unready pods too", () => {
    // `publishNotReadyAddresses: true` reaches the proxy as the health policy ALLOW_ALL: peers of a
    // StatefulSet find each other by this name before any of them is ready.
    const store = mesh();
    store.upsert("ns2/peers.ns2.svc.cluster.local", {
      service: service("ns2", "peers.ns2.svc.cluster.local", [], {
        loadBalancing: { routingPreference: [], mode: "UNSPECIFIED_MODE", healthPolicy: "ALLOW_ALL" },
      }),
    });
    store.upsert("peer-0", {
      workload: pod("peer-0", "ns2", ["10.1.1.1"], ["ns2/peers.ns2.svc.cluster.local"]),
    });
    store.upsert("peer-1", {
      workload: pod("peer-1", "ns2", ["10.1.1.2"], ["ns2/peers.ns2.svc.cluster.local"], false),
    });
    const answer = resolveMeshName(store, ns2, "peers", 4);
    assert.equal(answer.kind, "answer");
    assert.deepEqual(answer.kind === "answer" && [...answer.addresses].sort(), ["10.1.1.1", "10.1.1.2"]);
    // Without the policy only ready pods are answered.
    assert.deepEqual((ask(ns2, "db") as { addresses: string[] }).addresses, ["10.1.0.1", "10.1.0.2"]);
  });

  it("answers only host addresses: a ServiceEntry's CIDR is not an address to give out", () => {
    const store = mesh();
    const cidr = (ip: string, length: number) => ({ network: "", address: bytes(ip), length });
    // Only a range: nothing the pod could dial by name, so the upstream resolver answers.
    store.upsert("ns2/range.example.com", {
      service: service("ns2", "range.example.com", [], { addresses: [cidr("10.20.0.0", 16)] }),
    });
    // A range and a host VIP (and a /32, which is a host): only the hosts are answered.
    store.upsert("ns2/mixed.example.com", {
      service: service("ns2", "mixed.example.com", [], {
        addresses: [
          cidr("10.30.0.0", 24),
          cidr("240.240.0.20", 32),
          { network: "", address: bytes("240.240.0.21") },
        ],
      }),
    });
    assert.deepEqual(resolveMeshName(store, ns2, "range.example.com", 4), { kind: "forward" });
    const mixed = resolveMeshName(store, ns2, "mixed.example.com", 4);
    assert.deepEqual(mixed.kind === "answer" && [...mixed.addresses].sort(), [
      "240.240.0.20",
      "240.240.0.21",
    ]);
  });

  it("keeps a namespace-visible Service to its namespace, and VIPs to the client's network", () => {
    assert.equal(ask(ns2, "private").kind, "answer");
    assert.deepEqual(ask(ns1, "private.ns2"), { kind: "forward" });
    assert.deepEqual((ask(ns2, "remote") as { addresses: string[] }).addresses, ["10.0.0.14"]);
    assert.deepEqual(
      (ask({ namespace: "ns2", network: "other" }, "remote") as { addresses: string[] }).addresses,
      ["10.9.0.1"],
    );
  });

  it("forwards names the mesh does not have, and the root", () => {
    assert.deepEqual(ask(ns1, "www.example.org"), { kind: "forward" });
    assert.deepEqual(ask(ns1, ""), { kind: "forward" });
    assert.deepEqual(ask(ns1, "."), { kind: "forward" });
    // A pod's own name under its headless Service (a StatefulSet's) is the cluster DNS's to answer,
    // however it is spelled.
    for (const name of ["db-0.db.ns2.svc.cluster.local", "db-0.db.ns2.svc", "db-0.db.ns2", "db-0.db"]) {
      assert.deepEqual(ask(ns2, name), { kind: "forward" }, name);
    }
  });

  it("follows the store: a removed Service is forwarded at once", () => {
    const store = mesh();
    assert.equal(resolveMeshName(store, ns1, "productpage", 4).kind, "answer");
    store.remove("ns1/productpage.ns1.svc.cluster.local");
    assert.deepEqual(resolveMeshName(store, ns1, "productpage", 4), { kind: "forward" });
  });

  it("uses the configured cluster domain", () => {
    const store = new WorkloadStore();
    const s = service("ns1", "web.ns1.svc.corp.internal", ["10.0.0.20"]);
    store.upsert("ns1/web", { service: s });
    assert.equal(resolveMeshName(store, ns1, "web", 4, "corp.internal").kind, "answer");
    assert.equal(resolveMeshName(store, ns1, "web", 4).kind, "forward");
  });
});

describe("resolveMeshName: wildcards and the Kubernetes zone (svc.<clusterDomain>)", () => {
  // A pod in `a` asks; `a/web` and `b/db` are Kubernetes Services. `evil` publishes ServiceEntries
  // visible to every namespace (the default exportTo).
  function zone(extra: Service[] = []): WorkloadStore {
    const store = new WorkloadStore();
    const add = (s: Service) => store.upsert(`${s.namespace}/${s.hostname}`, { service: s });
    add(service("a", "web.a.svc.cluster.local", ["10.96.0.20"], { canonical: true }));
    add(service("b", "db.b.svc.cluster.local", ["10.96.1.30"], { canonical: true }));
    add(service("evil", "*.svc.cluster.local", ["240.0.0.77"], { canonical: false }));
    add(service("evil", "*.cluster.local", ["240.0.0.79"], { canonical: false }));
    add(service("ext", "*.example.com", ["240.240.0.3"], { canonical: false }));
    for (const s of extra) add(s);
    return store;
  }
  const a: DnsClient = { namespace: "a", network: "" };
  const from = (store: WorkloadStore, client: DnsClient, name: string) => {
    const answer = resolveMeshName(store, client, name, 4);
    if (answer.kind === "forward") return "forward";
    return [answer.service, answer.canonicalName ?? null, answer.addresses];
  };

  it("answers the exact name of any spelling before a wildcard (M1)", () => {
    const store = zone();
    // glibc (ndots:5) asks the search-expanded forms first.
    assert.deepEqual(from(store, a, "db.b.svc.cluster.local.a.svc.cluster.local"), [
      "b/db.b.svc.cluster.local",
      "db.b.svc.cluster.local",
      ["10.96.1.30"],
    ]);
    assert.deepEqual(from(store, a, "web.a.svc.cluster.local.a.svc.cluster.local"), [
      "a/web.a.svc.cluster.local",
      "web.a.svc.cluster.local",
      ["10.96.0.20"],
    ]);
  });

  it("keeps another namespace's wildcard out of the Kubernetes zone (M1)", () => {
    const store = zone();
    for (const name of [
      "db", // no Service db in a: the cluster DNS says NXDOMAIN
      "db.a.svc.cluster.local",
      "nosuch.a.svc.cluster.local",
      "nosuch.b.svc.cluster.local",
      "web-0.sub.b.svc.cluster.local",
      // glibc's three search tries for google.com, then the name itself
      "google.com.a.svc.cluster.local",
      "google.com.svc.cluster.local",
      "google.com.cluster.local",
      "google.com",
      "nosuch.b.svc.cluster.local.a.svc.cluster.local",
      "10-1-0-1.a.pod.cluster.local",
      "svc.cluster.local",
      "a.svc.cluster.local",
    ]) {
      assert.equal(from(store, a, name), "forward", name);
    }
  });

  it("still answers a wildcard ServiceEntry's names however the pod's resolver spells them", () => {
    const store = zone();
    const wild = ["ext/*.example.com", null, ["240.240.0.3"]];
    for (const name of [
      "foo.example.com",
      "foo.example.com.",
      "foo.example.com.a.svc.cluster.local",
      "foo.example.com.svc.cluster.local",
      "foo.example.com.cluster.local",
    ]) {
      assert.deepEqual(from(store, a, name), wild, name);
    }
    // A namespace's wildcard in its own part of the zone, say for the pods of a headless Service
    // elsewhere, is answered to every namespace, in every spelling.
    const own = zone([service("b", "*.peers.b.svc.cluster.local", ["240.0.1.1"], { canonical: false })]);
    const peers = ["b/*.peers.b.svc.cluster.local", null, ["240.0.1.1"]];
    for (const name of [
      "p-0.peers.b.svc.cluster.local",
      "p-0.peers.b.svc",
      "p-0.peers.b",
      "p-0.peers.b.a.svc.cluster.local",
      "p-0.peers.b.svc.cluster.local.a.svc.cluster.local",
    ]) {
      assert.deepEqual(from(own, a, name), peers, name);
    }
    assert.equal(from(own, { namespace: "b", network: "" }, "p-0.peers").toString(), peers.toString());
    // And a wildcard over the whole zone from `a` answers names in `a`'s part of it only (to every
    // namespace); an exact Service still wins over it.
    const mine = zone([service("a", "*.svc.cluster.local", ["240.0.2.2"], { canonical: false })]);
    const c: DnsClient = { namespace: "c", network: "" };
    const mineWild = ["a/*.svc.cluster.local", null, ["240.0.2.2"]];
    assert.deepEqual(from(mine, a, "nosuch.a.svc.cluster.local"), mineWild);
    assert.deepEqual(from(mine, a, "nosuch"), mineWild);
    assert.deepEqual(from(mine, c, "nosuch.a.svc.cluster.local"), mineWild);
    assert.deepEqual(from(mine, c, "nosuch.a"), mineWild);
    assert.equal(from(mine, c, "nosuch"), "forward");
    assert.equal(from(mine, c, "nosuch.c.svc.cluster.local"), "forward");
    assert.equal(from(mine, c, "nosuch.b.svc.cluster.local"), "forward");
    // A search form gets the answer of the name it stands for, whichever the resolver asks first.
    assert.deepEqual(
      from(mine, a, "google.com.a.svc.cluster.local.a.svc.cluster.local"),
      from(mine, a, "google.com.a.svc.cluster.local"),
    );
    assert.equal(from(mine, a, "nosuch.b.svc.cluster.local.a.svc.cluster.local"), "forward");
    assert.deepEqual(from(mine, a, "web"), ["a/web.a.svc.cluster.local", null, ["10.96.0.20"]]);
    assert.deepEqual(from(mine, a, "db.b.a.svc.cluster.local"), [
      "b/db.b.svc.cluster.local",
      "db.b",
      ["10.96.1.30"],
    ]);
  });

  it("answers a Kubernetes Service before a ServiceEntry host spelled like its short name (L1)", () => {
    const store = zone([
      service("evil", "db.b", ["240.0.0.80"], { canonical: false }),
      service("evil", "web", ["240.0.0.67"], { canonical: false }),
    ]);
    assert.deepEqual(from(store, a, "db.b.a.svc.cluster.local"), [
      "b/db.b.svc.cluster.local",
      "db.b",
      ["10.96.1.30"],
    ]);
    assert.deepEqual(from(store, a, "db.b"), ["b/db.b.svc.cluster.local", null, ["10.96.1.30"]]);
    assert.deepEqual(from(store, a, "web"), ["a/web.a.svc.cluster.local", null, ["10.96.0.20"]]);
    assert.deepEqual(from(store, a, "web.a.svc.cluster.local"), [
      "a/web.a.svc.cluster.local",
      null,
      ["10.96.0.20"],
    ]);
    // Where no Kubernetes Service has the name, the ServiceEntry host is still answered.
    const c: DnsClient = { namespace: "c", network: "" };
    assert.deepEqual(from(store, c, "web"), ["evil/web", null, ["240.0.0.67"]]);
    assert.deepEqual(from(store, c, "web.c.svc.cluster.local"), ["evil/web", "web", ["240.0.0.67"]]);
  });
});

describe("kubernetesExpansions", () => {
  it("expands short Kubernetes names only, as ztunnel's to_kube_fqdns", () => {
    // ztunnel's forms: <service>.<namespace>[.svc] and a pod's <hostname>.<subdomain>[.<namespace>[.svc]].
    const cases: [string, string[]][] = [
      ["name", ["name.ns1.svc.cluster.local"]],
      ["name.ns2", ["name.ns2.svc.cluster.local", "name.ns2.ns1.svc.cluster.local"]],
      ["name.ns2.svc", ["name.ns2.svc.cluster.local", "name.ns2.svc.svc.cluster.local"]],
      ["host.sub.ns2", ["host.sub.ns2.svc.cluster.local"]],
      ["host.sub.ns2.svc", ["host.sub.ns2.svc.cluster.local"]],
      ["name.ns2.svc.cluster", []],
      ["name.ns2.svc.cluster.local", []],
      ["a.b.c.d.e", []],
    ];
    for (const [name, expected] of cases) {
      assert.deepEqual(kubernetesExpansions(name, "ns1", "cluster.local"), expected, name);
    }
  });
});
