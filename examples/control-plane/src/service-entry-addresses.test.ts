import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type HostAddress,
  ServiceEntryAddressAllocator,
  type ServiceEntryLike,
  wantsAllocatedAddresses,
} from "./service-entry-addresses.js";

function entry(
  name: string,
  hosts: string[],
  extra: {
    addresses?: string[];
    resolution?: string;
    status?: HostAddress[];
    labels?: Record<string, string>;
  } = {},
): ServiceEntryLike {
  return {
    metadata: { name, namespace: "ns1", ...(extra.labels === undefined ? {} : { labels: extra.labels }) },
    spec: {
      hosts,
      ...(extra.addresses === undefined ? {} : { addresses: extra.addresses }),
      resolution: extra.resolution ?? "DNS",
    },
    ...(extra.status === undefined ? {} : { status: { addresses: extra.status } }),
  };
}

/** Applies what `assign` returned, as the folder source (or the cluster, after a write) does. */
function apply(updates: Map<ServiceEntryLike, HostAddress[]>): void {
  for (const [e, addresses] of updates) e.status = { ...(e.status ?? {}), addresses };
}

describe("ServiceEntry address allocation", () => {
  it("gives each non-wildcard host of an entry without addresses the next address", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const a = entry("a", ["a.example.com", "b.example.com", "*.wild.example.com"]);
    const b = entry("b", ["c.example.com"]);
    const updates = allocator.assign([a, b]);
    assert.deepEqual(updates.get(a), [
      { host: "a.example.com", value: "240.240.0.1" },
      { host: "b.example.com", value: "240.240.0.2" },
    ]);
    assert.deepEqual(updates.get(b), [{ host: "c.example.com", value: "240.240.0.3" }]);
  });

  it("gives a wildcard host an address with resolution DYNAMIC_DNS only", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const dynamic = entry("d", ["*.dyn.example.com", "one.example.com"], { resolution: "DYNAMIC_DNS" });
    const dns = entry("s", ["*.dns.example.com"]);
    const updates = allocator.assign([dynamic, dns]);
    assert.deepEqual(updates.get(dynamic), [
      { host: "*.dyn.example.com", value: "240.240.0.1" },
      { host: "one.example.com", value: "240.240.0.2" },
    ]);
    assert.equal(updates.has(dns), false);
  });

  it("leaves out entries with addresses, resolution NONE or none given, or the opt-out label", () => {
    const unresolved: ServiceEntryLike = {
      metadata: { name: "x", namespace: "ns1" },
      spec: { hosts: ["x.example.com"] },
    };
    for (const e of [
      unresolved,
      entry("x", ["x.example.com"], { addresses: ["10.9.0.1"] }),
      entry("x", ["x.example.com"], { resolution: "NONE" }),
      entry("x", ["x.example.com"], { labels: { "networking.istio.io/enable-autoallocate-ip": "False" } }),
    ]) {
      assert.equal(wantsAllocatedAddresses(e), false);
      assert.equal(new ServiceEntryAddressAllocator().assign([e]).size, 0);
    }
    assert.equal(
      wantsAllocatedAddresses(
        entry("x", ["x"], { labels: { "networking.istio.io/enable-autoallocate-ip": "true" } }),
      ),
      true,
    );
  });

  it("keeps what an entry shows or was given, and reports nothing when all is current", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const a = entry("a", ["a.example.com"]);
    apply(allocator.assign([a]));
    assert.equal(allocator.assign([a]).size, 0, "nothing to write once the status shows it");
    // The same entry re-read without status (a file re-parsed after an edit) gets its address back.
    const edited = entry("a", ["a.example.com", "d.example.com"]);
    assert.deepEqual(allocator.assign([edited]).get(edited), [
      { host: "a.example.com", value: "240.240.0.1" },
      { host: "d.example.com", value: "240.240.0.2" },
    ]);
  });

  it("never hands out an address another entry shows or lists", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const taken = entry("taken", ["t.example.com"], {
      status: [{ host: "t.example.com", value: "240.240.0.1" }],
    });
    const own = entry("own", ["o.example.com"], { addresses: ["240.240.0.2"] });
    const fresh = entry("fresh", ["f.example.com"]);
    const updates = allocator.assign([fresh, taken, own]);
    assert.deepEqual(updates.get(fresh), [{ host: "f.example.com", value: "240.240.0.3" }]);
    assert.equal(updates.has(taken), false);
  });

  it("does not reuse an address just freed", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const a = entry("a", ["a.example.com"]);
    apply(allocator.assign([a]));
    // a is deleted; the next entry gets a new address, not a's, which clients may have cached.
    const b = entry("b", ["b.example.com"]);
    assert.deepEqual(allocator.assign([b]).get(b), [{ host: "b.example.com", value: "240.240.0.2" }]);
  });

  it("drops a removed host from the status", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const a = entry("a", ["a.example.com", "b.example.com"]);
    apply(allocator.assign([a]));
    a.spec.hosts = ["b.example.com"];
    assert.deepEqual(allocator.assign([a]).get(a), [{ host: "b.example.com", value: "240.240.0.2" }]);
  });

  it("settles two entries showing one address: the older keeps it, the other gets a new one", () => {
    const allocator = new ServiceEntryAddressAllocator();
    // As after a leader change whose cache had not yet seen the last write, or a restored backup.
    const younger = entry("a-younger", ["y.example.com"], {
      status: [{ host: "y.example.com", value: "240.240.0.7" }],
    });
    const older = entry("z-older", ["o.example.com"], {
      status: [{ host: "o.example.com", value: "240.240.0.7" }],
    });
    (younger.metadata as { creationTimestamp?: string }).creationTimestamp = "2026-03-02T00:00:00Z";
    (older.metadata as { creationTimestamp?: string }).creationTimestamp = "2026-03-01T00:00:00Z";
    const updates = allocator.assign([younger, older]);
    assert.equal(updates.has(older), false, "the older entry keeps its address");
    assert.deepEqual(updates.get(younger), [{ host: "y.example.com", value: "240.240.0.1" }]);
    apply(updates);
    assert.equal(allocator.assign([younger, older]).size, 0, "settled: nothing more to write");
  });

  it("moves an allocated address that another entry lists in spec.addresses", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const auto = entry("auto", ["a.example.com"], {
      status: [{ host: "a.example.com", value: "240.240.0.1" }],
    });
    const own = entry("own", ["o.example.com"], { addresses: ["240.240.0.1/32"] });
    const updates = allocator.assign([auto, own]);
    assert.deepEqual(updates.get(auto), [{ host: "a.example.com", value: "240.240.0.2" }]);
    apply(updates);
    assert.equal(allocator.assign([auto, own]).size, 0);
  });

  it("gives each host of one entry its own address, and a host listed twice one", () => {
    const allocator = new ServiceEntryAddressAllocator();
    const a = entry("a", ["a.example.com", "b.example.com"], {
      status: [
        { host: "a.example.com", value: "240.240.0.5" },
        { host: "b.example.com", value: "240.240.0.5" },
      ],
    });
    const updates = allocator.assign([a]);
    assert.deepEqual(updates.get(a), [
      { host: "a.example.com", value: "240.240.0.5" },
      { host: "b.example.com", value: "240.240.0.1" },
    ]);
    apply(updates);
    assert.equal(allocator.assign([a]).size, 0);
    const twice = entry("twice", ["t.example.com", "t.example.com"]);
    const given = allocator.assign([a, twice]);
    assert.deepEqual(given.get(twice), [{ host: "t.example.com", value: "240.240.0.2" }]);
    apply(given);
    assert.equal(allocator.assign([a, twice]).size, 0);
  });

  it("wraps around the range and stops when it is full", () => {
    const allocator = new ServiceEntryAddressAllocator();
    // 240.240.0.1 to 240.240.255.253 are in some status; 240.240.255.254, the last, is free.
    const many = Array.from({ length: 65_533 }, (_, i) => {
      const n = i + 1;
      const value = `240.240.${n >> 8}.${n & 255}`;
      return entry(`e${i}`, [`h${i}.example.com`], { status: [{ host: `h${i}.example.com`, value }] });
    });
    const last = entry("last", ["last.example.com"]);
    const extra = entry("extra", ["extra.example.com"]);
    const updates = allocator.assign([...many, last, extra]);
    assert.deepEqual(updates.get(last), [{ host: "last.example.com", value: "240.240.255.254" }]);
    assert.equal(updates.has(extra), false, "no address left, nothing to write");
  });
});
