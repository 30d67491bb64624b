import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HboneError } from "./errors.js";
import {
  createTraceparent,
  formatBaggage,
  formatForwarded,
  formatTraceparent,
  formatWorkloadBaggage,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
  parseWorkloadBaggage,
} from "./headers.js";

const invalidHeader = (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_INVALID_HEADER";

describe("forwarded", () => {
  it("quotes for= as ztunnel does and round-trips", () => {
    assert.equal(formatForwarded({ for: "10.0.0.1:3456" }), 'for="10.0.0.1:3456"');
    assert.equal(
      formatForwarded({ for: "[2001:db8::1]:80", host: "reviews.default.svc.cluster.local" }),
      'for="[2001:db8::1]:80";host=reviews.default.svc.cluster.local',
    );
    const text = formatForwarded([
      { for: "10.0.0.1:1", proto: "https" },
      { for: "unknown", by: 'we"ird' },
    ]);
    assert.deepEqual(parseForwarded(text), [
      { for: "10.0.0.1:1", proto: "https" },
      { for: "unknown", by: 'we"ird' },
    ]);
  });

  it("parses RFC 7239 examples, case-insensitive names, unknown parameters skipped", () => {
    assert.deepEqual(parseForwarded('For="[2001:db8:cafe::17]:4711"'), [{ for: "[2001:db8:cafe::17]:4711" }]);
    assert.deepEqual(parseForwarded("for=192.0.2.60;proto=http;by=203.0.113.43"), [
      { for: "192.0.2.60", proto: "http", by: "203.0.113.43" },
    ]);
    assert.deepEqual(parseForwarded("for=192.0.2.43, for=198.51.100.17;ext=1"), [
      { for: "192.0.2.43" },
      { for: "198.51.100.17" },
    ]);
  });

  it("rejects malformed values", () => {
    for (const bad of ["for", "for=", 'for="unterminated', "for=a b", "=x", "for=a;;"]) {
      assert.throws(() => parseForwarded(bad), invalidHeader, bad);
    }
    assert.throws(() => formatForwarded({ for: "a\nb" }), invalidHeader);
    assert.throws(() => formatForwarded([]), invalidHeader);
  });
});

describe("baggage", () => {
  it("formats and parses W3C baggage with percent-encoding", () => {
    const text = formatBaggage({ "k8s.namespace.name": "default", note: "a b,c;d%" });
    assert.equal(text, "k8s.namespace.name=default,note=a%20b%2Cc%3Bd%25");
    assert.deepEqual(
      [...parseBaggage(text)],
      [
        ["k8s.namespace.name", "default"],
        ["note", "a b,c;d%"],
      ],
    );
    assert.deepEqual(
      [...parseBaggage(" a = 1 ;prop=x , b=2")],
      [
        ["a", "1"],
        ["b", "2"],
      ],
    );
    assert.equal(parseBaggage("").size, 0);
  });

  it("rejects bad members and oversized headers", () => {
    assert.throws(() => parseBaggage("novalue"), invalidHeader);
    assert.throws(() => parseBaggage("bad key=1"), invalidHeader);
    assert.throws(() => parseBaggage("a=%zz"), invalidHeader);
    assert.throws(() => parseBaggage(`a=${"x".repeat(9000)}`), invalidHeader);
    assert.throws(() => formatBaggage({ "bad key": "1" }), invalidHeader);
  });

  it("builds and reads the workload keys ztunnel sends", () => {
    const text = formatWorkloadBaggage({
      clusterId: "Kubernetes",
      namespace: "default",
      workloadName: "reviews-v1",
      service: "reviews",
      revision: "v1",
      region: "us-east1",
      zone: "us-east1-b",
    });
    assert.equal(
      text,
      "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=reviews-v1,service.name=reviews,service.version=v1,cloud.region=us-east1,cloud.availability_zone=us-east1-b",
    );
    assert.deepEqual(parseWorkloadBaggage(text), {
      clusterId: "Kubernetes",
      namespace: "default",
      workloadName: "reviews-v1",
      workloadType: "deployment",
      service: "reviews",
      revision: "v1",
      region: "us-east1",
      zone: "us-east1-b",
    });
    assert.equal(formatWorkloadBaggage({ workloadName: "p", workloadType: "pod" }), "k8s.pod.name=p");
  });
});

describe("traceparent", () => {
  it("parses and formats version 00", () => {
    const text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const tp = parseTraceparent(text);
    assert.deepEqual(tp, {
      version: "00",
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentId: "b7ad6b7169203331",
      flags: 1,
    });
    assert.equal(formatTraceparent(tp), text);
  });

  it("creates random 55-character values", () => {
    const a = formatTraceparent(createTraceparent());
    const b = formatTraceparent(createTraceparent({ sampled: true }));
    assert.equal(a.length, 55);
    assert.notEqual(a.slice(3, 35), b.slice(3, 35));
    assert.ok(a.endsWith("-00"));
    assert.ok(b.endsWith("-01"));
  });

  it("trims only the spaces and tabs HTTP allows around a field value", () => {
    const text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert.equal(parseTraceparent(` \t${text}\t `).traceId, "0af7651916cd43dd8448eb211c80319c");
    for (const around of ["\u00a0", "\ufeff", "\n", "\u2028"]) {
      assert.throws(() => parseTraceparent(`${around}${text}`), HboneError, JSON.stringify(around));
      assert.throws(() => parseTraceparent(`${text}${around}`), HboneError, JSON.stringify(around));
    }
  });

  it("reads a future version's first four fields and ignores what follows a dash", () => {
    const ids = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";
    assert.deepEqual(parseTraceparent(`cc-${ids}-01-what-the-future-holds`), {
      version: "cc",
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentId: "b7ad6b7169203331",
      flags: 1,
    });
    assert.throws(() => parseTraceparent(`cc-${ids}-01x`), HboneError);
    assert.throws(() => parseTraceparent(`00-${ids}-01-`), HboneError);
  });

  it("rejects invalid values", () => {
    for (const bad of [
      "",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
      "00-00000000000000000000000000000000-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
      "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ]) {
      assert.throws(() => parseTraceparent(bad), invalidHeader, bad);
    }
    // Future versions may carry more fields.
    assert.equal(
      parseTraceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more").version,
      "01",
    );
  });
});
