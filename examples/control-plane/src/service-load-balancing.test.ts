import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseManifests } from "./manifests.js";
import { serviceLoadBalancing, TRAFFIC_DISTRIBUTION_ANNOTATION } from "./service-load-balancing.js";
import { translateMesh } from "./translate-mesh.js";

const ZONE = { routingPreference: ["NETWORK", "REGION", "ZONE"], mode: "FAILOVER" };
const NODE_FIRST = { routingPreference: ["NETWORK", "REGION", "ZONE", "SUBZONE", "NODE"], mode: "FAILOVER" };
const LOCAL = { routingPreference: ["NODE"], mode: "STRICT" };
const ann = (v: string) => ({ [TRAFFIC_DISTRIBUTION_ANNOTATION]: v });

describe("serviceLoadBalancing", () => {
  const cases: [string, Parameters<typeof serviceLoadBalancing>[0], unknown][] = [
    ["nothing set: the default", {}, undefined],
    ["trafficDistribution PreferClose", { trafficDistribution: "PreferClose" }, ZONE],
    ["trafficDistribution PreferSameZone", { trafficDistribution: "PreferSameZone" }, ZONE],
    ["trafficDistribution PreferSameNode", { trafficDistribution: "PreferSameNode" }, NODE_FIRST],
    ["an unknown value", { trafficDistribution: "Nearby" }, undefined],
    ["the spec field is matched case-sensitively", { trafficDistribution: "preferclose" }, undefined],
    [
      "an unknown spec value falls back to the Service annotation",
      { trafficDistribution: "Nearby", serviceAnnotations: ann("PreferSameNode") },
      NODE_FIRST,
    ],
    [
      "an unknown spec value falls back to the Namespace annotation",
      { trafficDistribution: "preferSameNode", namespaceAnnotations: ann("PreferClose") },
      ZONE,
    ],
    [
      "an empty spec value falls back to the annotations",
      { trafficDistribution: "", serviceAnnotations: ann("PreferClose") },
      ZONE,
    ],
    [
      "the annotation is matched case-insensitively",
      { serviceAnnotations: ann("prefersamenode") },
      NODE_FIRST,
    ],
    [
      "an unknown Service annotation means no preference, whatever the Namespace's",
      { serviceAnnotations: ann("Nearby"), namespaceAnnotations: ann("PreferSameNode") },
      undefined,
    ],
    [
      "an empty Service annotation falls back to the Namespace's",
      { serviceAnnotations: ann(""), namespaceAnnotations: ann("PreferSameNode") },
      NODE_FIRST,
    ],
    ["an unknown Namespace annotation", { namespaceAnnotations: ann("PreferSameRegion") }, undefined],
    [
      "the PreferNetwork annotation is not a preference",
      { serviceAnnotations: ann("PreferNetwork") },
      undefined,
    ],
    ["the Service annotation", { serviceAnnotations: ann("PreferClose") }, ZONE],
    ["the Namespace annotation", { namespaceAnnotations: ann("PreferSameNode") }, NODE_FIRST],
    [
      "the spec field wins over the annotations",
      { trafficDistribution: "PreferSameNode", serviceAnnotations: ann("PreferClose") },
      NODE_FIRST,
    ],
    [
      "the Service annotation wins over the Namespace's",
      { serviceAnnotations: ann("PreferSameZone"), namespaceAnnotations: ann("PreferSameNode") },
      ZONE,
    ],
    [
      "internalTrafficPolicy Local: same node only",
      { internalTrafficPolicy: "Local", trafficDistribution: "PreferClose" },
      LOCAL,
    ],
    ["publishNotReadyAddresses alone", { publishNotReadyAddresses: true }, { healthPolicy: "ALLOW_ALL" }],
    [
      "publishNotReadyAddresses with a preference",
      { publishNotReadyAddresses: true, trafficDistribution: "PreferClose" },
      { ...ZONE, healthPolicy: "ALLOW_ALL" },
    ],
  ];
  for (const [what, input, want] of cases) {
    it(what, () => assert.deepEqual(serviceLoadBalancing(input), want));
  }

  it("lands in the Service's Address resource", () => {
    const { objects } = parseManifests([
      {
        path: "m.yaml",
        text: `
apiVersion: v1
kind: Namespace
metadata: { name: demo, annotations: { ${TRAFFIC_DISTRIBUTION_ANNOTATION}: PreferSameNode } }
---
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: demo }
spec: { clusterIP: 127.30.0.1, trafficDistribution: PreferClose, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo }
spec: { clusterIP: 127.30.0.2, ports: [{ port: 80 }] }
`,
      },
    ]);
    const mesh = translateMesh(objects);
    const lb = (name: string) => mesh.services.find((s) => s.service.name === name)?.service.loadBalancing;
    assert.deepEqual(lb("echo"), ZONE);
    assert.deepEqual(lb("web"), NODE_FIRST);
  });
});
