import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DnsError,
  type DnsForwarder,
  type DnsMessage,
  type DnsRequest,
  decodeMessage,
  encodeMessage,
  queryMessage,
  RecordType,
  ResponseCode,
  recordAddress,
  recordTarget,
  replyTo,
} from "@ambient/dns";
import { createPromClientSink } from "@ambient/telemetry";
import * as prom from "prom-client";
import { testService, testWorkload } from "../test/fixtures.js";
import { createDnsProxy } from "./dns-proxy.js";
import { parseIpv4, parseIpv6 } from "./ip-address.js";
import { noopLogger } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";

function query(name: string, type: number, cls = 1): DnsMessage {
  return queryMessage(name, type, { id: 7, questions: [{ name, type, class: cls }] });
}

function request(message: DnsMessage): DnsRequest {
  return {
    message,
    bytes: encodeMessage(message),
    protocol: "udp",
    remote: { address: "127.0.0.1", port: 5353 },
    local: { address: "127.0.0.1", port: 15053 },
  };
}

/** A forwarder that answers from a function (or fails), recording what it was asked. */
function fakeForwarder(answer: (q: DnsMessage) => DnsMessage | Error): DnsForwarder & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    forward: async (bytes: DnsMessage | Uint8Array) => {
      const q = bytes instanceof Uint8Array ? decodeMessage(bytes) : bytes;
      asked.push(q.questions[0]?.name ?? "");
      const a = answer(q);
      if (a instanceof Error) throw a;
      return encodeMessage(a);
    },
    close: () => {},
  } as unknown as DnsForwarder & { asked: string[] };
}

function setup(
  answer: (q: DnsMessage) => DnsMessage | Error = (q) => replyTo(q, { rcode: ResponseCode.NXDOMAIN }),
  proxyOptions: { ipv6?: boolean } = {},
) {
  const store = new WorkloadStore();
  const web = testService("web", "10.96.0.20", [
    { servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" },
  ]);
  store.upsert("default/web.default.svc.cluster.local", { service: web });
  const se = testService("api", "240.240.0.1", [{ servicePort: 443, targetPort: 443, appProtocol: "TLS" }], {
    hostname: "api.example.com",
  });
  store.upsert("default/api.example.com", { service: se });
  const registry = new prom.Registry();
  const forwarder = fakeForwarder(answer);
  const proxy = createDnsProxy({
    store,
    forwarder,
    ...proxyOptions,
    logger: noopLogger,
    metrics: createPromClientSink(prom, registry),
  });
  const client = testWorkload("sleep", "node-a", "10.244.1.11", { canonicalRevision: "v1" });
  const handle = proxy.handlerFor(client);
  const ask = async (name: string, type: number, cls = 1) =>
    (await handle(request(query(name, type, cls)))) as DnsMessage;
  return { ask, registry, forwarder, store };
}

describe("the DNS proxy's handler", () => {
  it("answers a mesh name itself, with authority and the Service's VIP", async () => {
    const { ask, forwarder } = setup();
    const reply = await ask("web", RecordType.A);
    assert.equal(reply.authoritative, true);
    assert.equal(reply.rcode, ResponseCode.NOERROR);
    assert.deepEqual(
      reply.answers.map((r) => [r.name, r.type, r.ttl, recordAddress(r)]),
      [["web", RecordType.A, 30, "10.96.0.20"]],
    );
    assert.deepEqual(forwarder.asked, []);
  });

  it("maps a name with a search domain appended to the ServiceEntry host with a CNAME", async () => {
    const { ask } = setup();
    const reply = await ask("api.example.com.default.svc.cluster.local", RecordType.A);
    assert.deepEqual(
      reply.answers.map((r) => [r.name, r.type, recordTarget(r) ?? recordAddress(r)]),
      [
        ["api.example.com.default.svc.cluster.local", RecordType.CNAME, "api.example.com"],
        ["api.example.com", RecordType.A, "240.240.0.1"],
      ],
    );
  });

  it("answers a search-domain name with no address of the family asked with no records at all, not a CNAME alone", async () => {
    const { ask, forwarder, store } = setup();
    // `web` is IPv4-only; the client's stub resolver appended its first search domain to `web.default`.
    const suffixed = "web.default.default.svc.cluster.local";
    const none = await ask(suffixed, RecordType.AAAA);
    assert.equal(none.rcode, ResponseCode.NOERROR);
    assert.equal(none.authoritative, true);
    assert.deepEqual(none.answers, []);
    // The same for a Service of either family that has no VIP of the family asked.
    const either = testService("either", "240.240.0.2", [], {
      hostname: "either.example.com",
      ipFamilies: "DUAL",
    });
    store.upsert("default/either.example.com", { service: either });
    const noVip = await ask("either.example.com.default.svc.cluster.local", RecordType.AAAA);
    assert.equal(noVip.rcode, ResponseCode.NOERROR);
    assert.deepEqual(noVip.answers, []);
    // With an address of the family, the CNAME comes first, then the addresses under its target.
    const a = await ask(suffixed, RecordType.A);
    assert.deepEqual(
      a.answers.map((r) => [r.name, r.type, r.ttl, recordTarget(r) ?? recordAddress(r)]),
      [
        [suffixed, RecordType.CNAME, 30, "web.default"],
        ["web.default", RecordType.A, 30, "10.96.0.20"],
      ],
    );
    assert.deepEqual(forwarder.asked, []);
  });

  it("does not let another namespace's wildcard ServiceEntry answer the pod's search-path questions", async () => {
    const { ask, forwarder, store } = setup();
    const wildcard = (namespace: string, hostname: string, vip: string) =>
      store.upsert(`${namespace}/${hostname}`, {
        service: testService("wild", vip, [], { namespace, hostname, canonical: false }),
      });
    wildcard("evil", "*.svc.cluster.local", "240.0.0.77");
    wildcard("ext", "*.example.com", "240.240.0.3");
    const answers = async (name: string) =>
      (await ask(name, RecordType.A)).answers.map((r) => [
        r.name,
        r.type,
        recordTarget(r) ?? recordAddress(r),
      ]);
    // glibc with ndots:5 asks for web.default.svc.cluster.local with its first search domain.
    const suffixed = "web.default.svc.cluster.local.default.svc.cluster.local";
    assert.deepEqual(await answers(suffixed), [
      [suffixed, RecordType.CNAME, "web.default.svc.cluster.local"],
      ["web.default.svc.cluster.local", RecordType.A, "10.96.0.20"],
    ]);
    // Its first try for google.com, and a short name the namespace has no Service for: forwarded.
    const nx = (await ask("google.com.default.svc.cluster.local", RecordType.A)) as unknown;
    assert.equal(decodeMessage(nx as Uint8Array).rcode, ResponseCode.NXDOMAIN);
    await ask("db", RecordType.A);
    assert.deepEqual(forwarder.asked, ["google.com.default.svc.cluster.local", "db"]);
    // A wildcard outside the cluster domain still answers, in the search form and as asked.
    assert.deepEqual(await answers("foo.example.com.default.svc.cluster.local"), [
      ["foo.example.com.default.svc.cluster.local", RecordType.A, "240.240.0.3"],
    ]);
    assert.deepEqual(await answers("foo.example.com"), [["foo.example.com", RecordType.A, "240.240.0.3"]]);
  });

  it("with IPv6 off (ztunnel's IPV6_ENABLED=false), answers AAAA for a mesh name with no records", async () => {
    const dual = testService("dual", "10.96.0.30", [], {
      addresses: [
        { network: "", address: parseIpv4("10.96.0.30") as Uint8Array },
        { network: "", address: parseIpv6("fd00::30") as Uint8Array },
      ],
      ipFamilies: "DUAL",
    });
    const on = setup();
    on.store.upsert("default/dual.default.svc.cluster.local", { service: dual });
    assert.deepEqual(
      (await on.ask("dual", RecordType.AAAA)).answers.map((r) => recordAddress(r)),
      ["fd00::30"],
    );
    const off = setup(undefined, { ipv6: false });
    off.store.upsert("default/dual.default.svc.cluster.local", { service: dual });
    const aaaa = await off.ask("dual", RecordType.AAAA);
    assert.equal(aaaa.rcode, ResponseCode.NOERROR);
    assert.equal(aaaa.authoritative, true);
    assert.deepEqual(aaaa.answers, []);
    assert.deepEqual(
      (await off.ask("dual", RecordType.A)).answers.map((r) => recordAddress(r)),
      ["10.96.0.30"],
    );
    // Names the mesh does not have are forwarded as asked, AAAA included.
    await off.ask("www.example.org", RecordType.AAAA);
    assert.deepEqual(off.forwarder.asked, ["www.example.org"]);
  });

  it("forwards other names, other types and other classes, and answers SERVFAIL when forwarding fails", async () => {
    let fail = false;
    const { ask, forwarder } = setup((q) =>
      fail
        ? new DnsError("ERR_DNS_UPSTREAM_TIMEOUT", "no answer")
        : replyTo(q, { rcode: ResponseCode.NXDOMAIN }),
    );
    const bytes = async (name: string, type: number, cls = 1) => {
      const r = (await ask(name, type, cls)) as unknown;
      return decodeMessage(r as Uint8Array);
    };
    assert.equal((await bytes("www.example.org", RecordType.A)).rcode, ResponseCode.NXDOMAIN);
    assert.equal((await bytes("web", RecordType.TXT)).rcode, ResponseCode.NXDOMAIN);
    assert.equal((await bytes("web", RecordType.A, 3)).rcode, ResponseCode.NXDOMAIN);
    assert.deepEqual(forwarder.asked, ["www.example.org", "web", "web"]);
    fail = true;
    const servfail = await ask("www.example.org", RecordType.A);
    assert.equal(servfail.rcode, ResponseCode.SERVFAIL);
  });

  it("labels requests by query type, with unusual types as other", async () => {
    const { ask, registry } = setup();
    await ask("web", RecordType.A);
    await ask("www.example.org", 4711);
    const text = await registry.metrics();
    assert.match(
      text,
      /istio_dns_requests_total\{request_query_type="a",request_protocol="udp",source_canonical_service="sleep",source_canonical_revision="v1"\} 1/,
    );
    assert.match(text, /istio_dns_requests_total\{request_query_type="other",[^}]*\} 1/);
    assert.match(text, /istio_dns_upstream_requests_total\{request_query_type="other",[^}]*\} 1/);
    assert.doesNotMatch(text, /TYPE4711|type4711/);
  });
});
