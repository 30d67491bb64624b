// The scale bench's envelope reader agrees with the full protobuf decoder on what it reads, and its
// clients see what a full client sees from a real server.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createXdsClient, createXdsServer, TypeUrl, typeRegistry } from "@ambient/xds";
import { createEnvelopeClient, decodeDeltaEnvelope, versionsDigest } from "./envelope-xds-client.js";

describe("envelope xDS client", () => {
  it("reads type, nonce, names, versions and removals as the full decoder does", () => {
    const payload = typeRegistry.encode(TypeUrl.address, { workload: { uid: "u1", name: "w1" } });
    const response = {
      systemVersionInfo: "sys",
      typeUrl: TypeUrl.address,
      nonce: "n-42",
      resources: [
        {
          name: "u1",
          version: "v1",
          aliases: ["net/10.0.0.1"],
          resource: { typeUrl: TypeUrl.address, value: payload },
        },
        {
          name: "ü-2",
          version: "v2",
          resource: { typeUrl: TypeUrl.address, value: new Uint8Array(300).fill(7) },
        },
      ],
      removedResources: ["gone-1", "gone-2"],
      controlPlane: { identifier: "cp" },
    };
    const bytes = typeRegistry.encode("envoy.service.discovery.v3.DeltaDiscoveryResponse", response);
    const full = typeRegistry.decode("envoy.service.discovery.v3.DeltaDiscoveryResponse", bytes);
    assert.deepEqual(decodeDeltaEnvelope(bytes), {
      typeUrl: full.typeUrl,
      nonce: full.nonce,
      resources: full.resources.map((r) => ({ name: r.name, version: r.version })),
      removed: full.removedResources,
    });
    assert.throws(() => decodeDeltaEnvelope(bytes.subarray(0, bytes.length - 3)), /truncated/);
  });

  it("holds the same names and versions as a full client, across an update and a removal", async () => {
    const server = createXdsServer({ debounceMs: 0 });
    for (let i = 0; i < 20; i++)
      server.cache.set(TypeUrl.address, `u${i}`, { workload: { uid: `u${i}`, name: `w${i}` } });
    const port = await server.listen();
    const address = `127.0.0.1:${port}`;
    const full = createXdsClient({ address, node: { id: "ztunnel~127.0.0.1~full.ns~ns.svc.cluster.local" } });
    const seen: string[][] = [];
    const envelope = createEnvelopeClient({
      address,
      nodeId: "ztunnel~127.0.0.1~env.ns~ns.svc.cluster.local",
      typeUrls: [TypeUrl.address],
      onResponse: (e) => seen.push(e.resources.map((r) => r.name)),
    });
    try {
      full.watch(TypeUrl.address);
      await Promise.all([full.ready(), envelope.ready()]);
      const digestOfFull = () =>
        versionsDigest(
          new Map([...full.resources(TypeUrl.address)].map(([n, r]) => [n, r.version] as const)),
        );
      assert.equal(versionsDigest(envelope.versions.get(TypeUrl.address)), digestOfFull());
      assert.match(digestOfFull(), /^20:/);
      const changed = new Promise<void>((resolve) => {
        const check = () => {
          const e = envelope.versions.get(TypeUrl.address);
          if (
            e?.has("u3") === false &&
            full.resources(TypeUrl.address).has("u3") === false &&
            e.get("u5") === full.resources(TypeUrl.address).get("u5")?.version &&
            seen.some((names) => names.includes("u5"))
          )
            resolve();
          else setTimeout(check, 10);
        };
        check();
      });
      server.cache.batch(() => {
        server.cache.set(TypeUrl.address, "u5", { workload: { uid: "u5", name: "w5-new" } });
        server.cache.delete(TypeUrl.address, "u3");
      });
      await changed;
      assert.equal(versionsDigest(envelope.versions.get(TypeUrl.address)), digestOfFull());
      assert.match(digestOfFull(), /^19:/);
    } finally {
      envelope.close();
      full.close();
      await server.close();
    }
  });
});
