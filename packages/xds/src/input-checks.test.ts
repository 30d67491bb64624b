import assert from "node:assert/strict";
import { type AddressInfo, connect as connectTcp, createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { XdsError, type XdsErrorCode } from "./errors.js";
import { ResourceCache } from "./resource-cache.js";
import { structFromJson } from "./struct.js";
import { TypeUrl, typeRegistry } from "./type-registry.js";
import { createXdsClient, type XdsClient } from "./xds-client.js";
import { createXdsServer, type XdsServer, type XdsServerOptions } from "./xds-server.js";

const A = TypeUrl.address;
const node = { id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local" };

const isXds = (code: XdsErrorCode) => (err: unknown) => err instanceof XdsError && err.code === code;

/** True when something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTcp(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("XdsServer.listen and close", () => {
  it("can listen again after a failed bind, and close releases the port", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const busy = (blocker.address() as AddressInfo).port;
    const server = createXdsServer();
    try {
      await assert.rejects(server.listen(`127.0.0.1:${busy}`), (err: unknown) => err instanceof XdsError);
      const port = await server.listen("127.0.0.1:0");
      assert.ok(port > 0);
      await server.close();
      assert.equal(await accepts(port), false);
    } finally {
      await server.close();
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it("refuses to listen once closed, so no port is left open", async () => {
    const server = createXdsServer();
    await server.close();
    await assert.rejects(server.listen("127.0.0.1:0"), isXds("ERR_XDS_CLOSED"));
    await server.close();

    const listened = createXdsServer();
    await listened.listen("127.0.0.1:0");
    await listened.close();
    await assert.rejects(listened.listen("127.0.0.1:0"), isXds("ERR_XDS_CLOSED"));
  });

  it("rejects an address that is not a non-empty string with ERR_XDS_INVALID_ARGUMENT", async () => {
    for (const address of ["", 15010, null]) {
      const server = createXdsServer();
      try {
        await assert.rejects(server.listen(address as string), isXds("ERR_XDS_INVALID_ARGUMENT"));
      } finally {
        await server.close();
      }
    }
  });
});

describe("createXdsServer options", () => {
  const bad: [string, unknown][] = [
    ["debounceMs", Number.NaN],
    ["debounceMs", -5],
    ["debounceMs", "100"],
    ["debounceMs", 2 ** 31],
    ["debounceLeadingEdge", "yes"],
    ["resolveTimeoutMs", Number.NaN],
    ["resolveTimeoutMs", 1e10],
    ["maxNamesPerType", Number.NaN],
    ["maxNamesPerType", -1],
    ["maxNamesPerType", 1.5],
    ["maxQueuedRequests", 0],
    ["maxQueuedRequests", Number.NaN],
    ["maxQueuedRequests", 2.5],
    ["maxBufferedBytes", Number.NaN],
    ["maxBufferedBytes", 0],
    ["maxBufferedBytes", "1024"],
    ["authenticationTimeoutMs", 1e10],
    ["cache", {}],
    ["visible", 5],
    ["authenticate", "x"],
    ["resolver", true],
    ["related", {}],
    ["onNack", 1],
  ];
  for (const [key, value] of bad) {
    it(`refuses ${key}: ${String(value)} with ERR_XDS_INVALID_ARGUMENT`, () => {
      assert.throws(
        () => createXdsServer({ [key]: value } as XdsServerOptions),
        isXds("ERR_XDS_INVALID_ARGUMENT"),
      );
    });
  }

  it("accepts the bounds", async () => {
    const server = createXdsServer({
      debounceMs: 0,
      resolveTimeoutMs: 2 ** 31 - 1,
      authenticationTimeoutMs: 2 ** 31 - 1,
      maxNamesPerType: 1,
      maxQueuedRequests: 1,
      maxBufferedBytes: 1,
      cache: new ResourceCache(),
      visible: () => true,
      authenticate: () => undefined,
    });
    await server.close();
  });
});

describe("argument shapes", () => {
  it("refuses aliases that are not an array of strings", () => {
    const cache = new ResourceCache();
    const resource = { workload: { uid: "u1", name: "w1" } };
    for (const aliases of ["default/10.0.0.7", [5], {}]) {
      assert.throws(
        () => cache.set(A, "u1", resource, { aliases: aliases as string[] }),
        isXds("ERR_XDS_INVALID_ARGUMENT"),
      );
    }
    assert.equal(cache.entry(A, "d"), undefined);
    assert.equal(cache.entry(A, "u1"), undefined);
  });

  it("refuses structFromJson of anything but a JSON object", () => {
    for (const json of ["abc", null, [1], 5, { a: undefined }, { a: () => 1 }]) {
      assert.throws(
        () => structFromJson(json as unknown as Record<string, string>),
        isXds("ERR_XDS_INVALID_ARGUMENT"),
      );
    }
    assert.deepEqual(structFromJson({ a: [1, "x", null, { b: true }] }).fields?.a, {
      listValue: {
        values: [
          { numberValue: 1 },
          { stringValue: "x" },
          { nullValue: "NULL_VALUE" },
          { structValue: { fields: { b: { boolValue: true } } } },
        ],
      },
    });
  });

  it("answers an undefined type URL with ERR_XDS_UNKNOWN_TYPE", () => {
    const missing = (TypeUrl as Record<string, string>).adress as string;
    assert.throws(() => typeRegistry.encode(missing, {} as never), isXds("ERR_XDS_UNKNOWN_TYPE"));
    assert.throws(() => typeRegistry.decode(missing, new Uint8Array()), isXds("ERR_XDS_UNKNOWN_TYPE"));
    assert.throws(() => typeRegistry.pack(missing, {} as never), isXds("ERR_XDS_UNKNOWN_TYPE"));
    assert.equal(typeRegistry.has(missing), false);
    const cache = new ResourceCache();
    assert.throws(() => cache.set(missing, "n", {} as never), isXds("ERR_XDS_UNKNOWN_TYPE"));
    assert.throws(() => cache.setEncoded(missing, "n", new Uint8Array()), isXds("ERR_XDS_UNKNOWN_TYPE"));
  });
});

describe("XdsClient argument checks and close", () => {
  let server: XdsServer;
  let address: string;
  before(async () => {
    server = createXdsServer({ debounceMs: 0 });
    address = `127.0.0.1:${await server.listen("127.0.0.1:0")}`;
  });
  after(() => server.close());

  const open = (): XdsClient => createXdsClient({ address, node });

  it("watch(undefined) throws ERR_XDS_UNKNOWN_TYPE", () => {
    const client = open();
    try {
      assert.throws(() => client.watch(undefined as unknown as string), isXds("ERR_XDS_UNKNOWN_TYPE"));
      assert.throws(
        () => client.watch(A, { names: "abc" as unknown as string[] }),
        isXds("ERR_XDS_INVALID_ARGUMENT"),
      );
    } finally {
      client.close();
    }
  });

  it("refuses names that are not an array of strings", async () => {
    const client = open();
    try {
      client.watch(A, { wildcard: false });
      assert.throws(
        () => client.subscribe(A, "abc" as unknown as string[]),
        isXds("ERR_XDS_INVALID_ARGUMENT"),
      );
      assert.throws(
        () => client.unsubscribe(A, "abc" as unknown as string[]),
        isXds("ERR_XDS_INVALID_ARGUMENT"),
      );
      await assert.rejects(client.lookup(A, "abc" as unknown as string[]), isXds("ERR_XDS_INVALID_ARGUMENT"));
      await assert.rejects(client.lookup(A, [5] as unknown as string[]), isXds("ERR_XDS_INVALID_ARGUMENT"));
    } finally {
      client.close();
    }
  });

  it("refuses a lookup timeout no timer can hold", async () => {
    const client = open();
    try {
      client.watch(A, { wildcard: false });
      for (const timeoutMs of [1e10, 2 ** 31, Number.NaN, -1]) {
        await assert.rejects(client.lookup(A, ["zz"], { timeoutMs }), isXds("ERR_XDS_INVALID_ARGUMENT"));
      }
    } finally {
      client.close();
    }
  });

  it("ready() and lookup() of a type not watched return a rejected promise", async () => {
    const client = open();
    try {
      let ready: Promise<void> | undefined;
      assert.doesNotThrow(() => {
        ready = client.ready(TypeUrl.workload);
      });
      await assert.rejects(ready as Promise<void>, isXds("ERR_XDS_INVALID_ARGUMENT"));
      let lookup: Promise<unknown> | undefined;
      assert.doesNotThrow(() => {
        lookup = client.lookup(TypeUrl.workload, ["x"]);
      });
      await assert.rejects(lookup as Promise<unknown>, isXds("ERR_XDS_INVALID_ARGUMENT"));
    } finally {
      client.close();
    }
  });

  it("rejects ready() pending at close() with ERR_XDS_CLOSED, and ready()/lookup() after it", async () => {
    const client = open();
    client.watch(TypeUrl.authorization);
    client.watch(A, { wildcard: false, names: ["never-there"] });
    const pendingOne = client.ready(TypeUrl.authorization);
    const pendingAll = client.ready();
    client.close();
    await assert.rejects(pendingOne, isXds("ERR_XDS_CLOSED"));
    await assert.rejects(pendingAll, isXds("ERR_XDS_CLOSED"));
    await assert.rejects(client.ready(A), isXds("ERR_XDS_CLOSED"));
    await assert.rejects(client.ready(), isXds("ERR_XDS_CLOSED"));
    await assert.rejects(client.lookup(A, ["x"]), isXds("ERR_XDS_CLOSED"));
  });
});
