import assert from "node:assert/strict";
import { Socket } from "node:net";
import { describe, it } from "node:test";
import type { HboneClient } from "@ambient/hbone";
import type { X509Svid } from "@ambient/spiffe";
import type { Service, Workload } from "@ambient/xds";
import { ipBytes, testService, testWorkload } from "../test/fixtures.js";
import { ConnectionRegistry } from "./connections.js";
import { createOutbound, type OutboundNetwork } from "./outbound.js";
import { SOCKS5_REPLY } from "./socks5.js";
import { createTcpMetrics } from "./tcp-metrics.js";
import { noopLogger, noopMetrics } from "./telemetry.js";
import { pickDestinationIp, WorkloadStore } from "./workload-store.js";

/** `fd00::<last>`: an IPv6 address as workload address bytes. */
const v6 = (last: number) => Uint8Array.from([0xfd, 0, ...new Array<number>(13).fill(0), last]);
const v6Text = (last: number) => `fd00::${last.toString(16)}`;

const sleep = testWorkload("sleep", "node-a", "10.0.1.11");

/**
 * The outbound dialer over `store`, with a network that only notes what it is asked to dial: plain
 * TCP (`tcp host:port`) or an HBONE tunnel (`hbone address authority`). Every dial fails afterwards, so
 * nothing is carried; what matters is where it went, or that it was refused before going anywhere.
 */
function dialer(store: WorkloadStore) {
  const dialed: string[] = [];
  const network: OutboundNetwork = {
    connectTcp(host, port) {
      dialed.push(`tcp ${host}:${port}`);
      const socket = new Socket();
      queueMicrotask(() => socket.destroy(new Error("not dialing in this test")));
      return socket;
    },
    hboneClient: () =>
      ({
        connect: async (options: { address: string; authority: string }) => {
          dialed.push(`hbone ${options.address} ${options.authority}`);
          throw new Error("not dialing in this test");
        },
      }) as unknown as HboneClient,
  };
  const outbound = createOutbound({
    store,
    svidOf: async () => ({ privateKeyPem: "", certChainPem: "" }) as unknown as X509Svid,
    trustOf: () => "",
    hbonePort: 15008,
    registry: new ConnectionRegistry(),
    tcpMetrics: createTcpMetrics(noopMetrics),
    resolveHostname: () => Promise.reject(new Error("no names here")),
    logger: noopLogger,
  });
  /** Dials `ip:port` for `sleep`: what was dialed, or the SOCKS5 reply of the refusal. */
  const dial = async (ip: string, port: number): Promise<{ dialed: string[]; reply?: number }> => {
    dialed.length = 0;
    try {
      await outbound.dial(network, "10.0.1.11", sleep, { ip, port });
    } catch (err) {
      const reply = (err as { details?: { reply?: number } }).details?.reply;
      return { dialed: [...dialed], ...(reply === undefined ? {} : { reply }) };
    }
    return { dialed: [...dialed] };
  };
  return { dial };
}

function storeWith(...entries: (Workload | Service)[]): WorkloadStore {
  const store = new WorkloadStore();
  store.upsert(sleep.uid, { workload: sleep });
  for (const e of entries) {
    if ("uid" in e) store.upsert(e.uid, { workload: e });
    else store.upsert(`${e.namespace}/${e.hostname}`, { service: e });
  }
  return store;
}

const echoKey = "default/echo.default.svc.cluster.local";
const servesEcho = {
  [echoKey]: { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" as const }] },
};
const echo = testService("echo", "10.96.0.1", [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }], {
  ipFamilies: "AUTOMATIC",
});
/** A waypoint pod, named by its IPv4 address, with its IPv6 address listed first. */
const waypointPod = testWorkload("waypoint", "node-b", "10.0.3.14", {
  addresses: [v6(0x14), ipBytes("10.0.3.14")],
});
const byAddress = { address: { network: "", address: ipBytes("10.0.3.14") }, hboneMtlsPort: 15008 };

describe("outbound: the address a workload is dialled at", () => {
  it("an HBONE pod whose first address is IPv6 is tunnelled to at the IPv4 address asked for, never in plaintext", async () => {
    const web = testWorkload("web", "node-b", "10.0.2.13", { addresses: [v6(0x13), ipBytes("10.0.2.13")] });
    const { dial } = dialer(storeWith(web));
    assert.deepEqual(await dial("10.0.2.13", 8080), { dialed: ["hbone 10.0.2.13:15008 10.0.2.13:8080"] });
  });

  it("such a pod with a waypoint of its own goes to the waypoint, never around it", async () => {
    const web = testWorkload("web", "node-b", "10.0.2.15", {
      addresses: [v6(0x15), ipBytes("10.0.2.15")],
      waypoint: byAddress,
    });
    const { dial } = dialer(storeWith(web, waypointPod));
    assert.deepEqual(await dial("10.0.2.15", 8080), { dialed: ["hbone 10.0.3.14:15008 10.0.2.15:8080"] });
  });

  it("a Service endpoint whose first address is IPv6 is tunnelled to at its IPv4 address, not at the VIP", async () => {
    const web = testWorkload("web", "node-b", "10.0.2.13", {
      addresses: [v6(0x13), ipBytes("10.0.2.13")],
      services: servesEcho,
    });
    const { dial } = dialer(storeWith(echo, web));
    assert.deepEqual(await dial("10.96.0.1", 80), { dialed: ["hbone 10.0.2.13:15008 10.0.2.13:8080"] });
  });

  it("a plain TCP endpoint whose first address is IPv6 is dialled at its IPv4 address, not at VIP:targetPort", async () => {
    const web = testWorkload("web", "node-b", "10.0.2.13", {
      addresses: [v6(0x13), ipBytes("10.0.2.13")],
      services: servesEcho,
      tunnelProtocol: "NONE",
    });
    const { dial } = dialer(storeWith(echo, web));
    assert.deepEqual((await dial("10.96.0.1", 80)).dialed, ["tcp 10.0.2.13:8080"]);
  });

  it("an HBONE endpoint with no address of the family asked for is refused, and nothing is dialled", async () => {
    const web = testWorkload("web", "node-b", "10.0.2.13", { addresses: [v6(0x13)], services: servesEcho });
    const { dial } = dialer(storeWith(echo, web));
    assert.deepEqual(await dial("10.96.0.1", 80), { dialed: [], reply: SOCKS5_REPLY.hostUnreachable });
  });

  it("an IPv6-only pod with a waypoint asked for by its IPv6 address still goes to its waypoint", async () => {
    const web = testWorkload("web", "node-b", "10.0.2.13", { addresses: [v6(0x16)], waypoint: byAddress });
    const { dial } = dialer(storeWith(web, waypointPod));
    assert.deepEqual(await dial(v6Text(0x16), 8080), {
      dialed: [`hbone 10.0.3.14:15008 [${v6Text(0x16)}]:8080`],
    });
  });

  it("a Service's waypoint whose pod lists its IPv6 address first is reached at the IPv4 address it is named by", async () => {
    const web = testService("web", "10.96.0.2", [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }], {
      waypoint: byAddress,
    });
    const { dial } = dialer(storeWith(web, waypointPod));
    assert.deepEqual(await dial("10.96.0.2", 80), { dialed: ["hbone 10.0.3.14:15008 10.96.0.2:80"] });
  });

  it("a waypoint Service's endpoint that lists its IPv6 address first is reached at its IPv4 address", async () => {
    const wpKey = "default/waypoint.default.svc.cluster.local";
    const wpService = testService("waypoint", "10.96.0.50", [
      { servicePort: 15008, targetPort: 15008, appProtocol: "TCP" },
    ]);
    const wpPod = {
      ...waypointPod,
      services: {
        [wpKey]: { ports: [{ servicePort: 15008, targetPort: 15008, appProtocol: "TCP" as const }] },
      },
    };
    const web = testService("web", "10.96.0.2", [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }], {
      waypoint: {
        hostname: { namespace: "default", hostname: "waypoint.default.svc.cluster.local" },
        hboneMtlsPort: 15008,
      },
    });
    const { dial } = dialer(storeWith(wpService, wpPod, web));
    assert.deepEqual(await dial("10.96.0.2", 80), { dialed: ["hbone 10.0.3.14:15008 10.96.0.2:80"] });
  });
});

describe("pickDestinationIp", () => {
  const dual = { addresses: [v6(0x13), ipBytes("10.0.2.13")] };
  const v4Only = { addresses: [ipBytes("10.0.2.13")] };
  const v6Only = { addresses: [v6(0x13)] };
  const cases: [
    string,
    { addresses: Uint8Array[] },
    string,
    Service["ipFamilies"] | undefined,
    string | undefined,
  ][] = [
    ["the address asked for, when the workload has it", dual, "10.0.2.13", undefined, "10.0.2.13"],
    ["its IPv6 address asked for", dual, v6Text(0x13), undefined, v6Text(0x13)],
    ["an IPv4 VIP: its IPv4 address, whatever comes first", dual, "10.96.0.1", "AUTOMATIC", "10.0.2.13"],
    ["an IPv6 VIP: its IPv6 address", dual, "fd00::1", "DUAL", v6Text(0x13)],
    ["an IPv4 VIP, an IPv6-only workload: none", v6Only, "10.96.0.1", undefined, undefined],
    ["an IPv6 VIP, an IPv4-only workload: none", v4Only, "fd00::1", undefined, undefined],
    ["an IPv4 VIP of an IPV6_ONLY Service: none", dual, "10.96.0.1", "IPV6_ONLY", undefined],
    ["an IPv4 VIP of an IPV4_ONLY Service", dual, "10.96.0.1", "IPV4_ONLY", "10.0.2.13"],
    ["no address at all: none", { addresses: [] }, "10.96.0.1", undefined, undefined],
  ];
  for (const [name, workload, target, families, want] of cases) {
    it(name, () => assert.equal(pickDestinationIp(workload, target, families), want));
  }
});
