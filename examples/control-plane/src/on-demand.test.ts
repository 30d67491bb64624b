import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { onDemandIndex, relatedAddresses } from "./on-demand.js";
import type { MeshWorkload } from "./translate-mesh.js";

const SVC = "demo/echo.demo.svc.cluster.local";
const OTHER = "demo/web.demo.svc.cluster.local";
const w = (key: string, node: string, services: string[], ip: string): MeshWorkload => ({
  key,
  aliases: [`/${ip}`],
  workload: {
    uid: key,
    node,
    services: Object.fromEntries(services.map((s) => [s, { ports: [] }])),
  },
});
const workloads = [
  w("echo-0", "node-b", [SVC], "127.10.0.3"),
  w("echo-1", "node-b", [SVC], "127.10.0.4"),
  w("sleep-0", "node-a", [], "127.10.0.2"),
  w("web-0", "node-c", [OTHER], "127.10.0.7"),
];
const aliases = new Map<string, string>([
  ["/127.30.0.1", SVC],
  ["/127.10.0.3", "echo-0"],
  ["/127.10.0.7", "web-0"],
]);
const resolveName = (name: string) => aliases.get(name);

describe("relatedAddresses", () => {
  const index = onDemandIndex({ workloads });
  const cases: [string, { names: string[]; subscribed?: string[]; nodeName?: string }, string[]][] = [
    ["a Service VIP brings its workloads", { names: ["/127.30.0.1"] }, ["echo-0", "echo-1"]],
    ["a Service key (hostname) too", { names: [SVC] }, ["echo-0", "echo-1"]],
    ["a pod IP brings nothing more", { names: ["/127.10.0.3"] }, []],
    ["an unknown name brings nothing", { names: ["/10.9.9.9", "x/y"] }, []],
    ["the client's node brings its pods, even for no names", { names: [], nodeName: "node-a" }, ["sleep-0"]],
    [
      "a changed workload behind a followed Service",
      { names: ["echo-1", "web-0"], subscribed: [SVC] },
      ["echo-1"],
    ],
    [
      "what is already followed is left out",
      { names: ["/127.30.0.1"], subscribed: ["echo-0", "/127.30.0.1"] },
      ["echo-1"],
    ],
  ];
  for (const [name, request, want] of cases) {
    it(name, () => {
      const got = relatedAddresses(index, {
        names: request.names,
        subscribed: new Set(request.subscribed ?? []),
        nodeName: request.nodeName,
        resolveName,
      });
      assert.deepEqual(got.sort(), want);
    });
  }

  it("indexes a config once", () => {
    const config = { workloads };
    assert.equal(onDemandIndex(config), onDemandIndex(config));
  });
});
