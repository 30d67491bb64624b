import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KubeObject } from "./manifests.js";
import { canonicalService, podWorkloadName } from "./workload-names.js";

function pod(
  name: string,
  meta: Partial<KubeObject["metadata"]> & Record<string, unknown> = {},
  labels: Record<string, string> = {},
): KubeObject {
  return {
    kind: "Pod",
    metadata: { name, namespace: "demo", labels, ...meta },
    source: `Pod/demo/${name}`,
  };
}

const controller = (kind: string, name: string) => ({
  generateName: `${name}-`,
  ownerReferences: [
    { apiVersion: "v1", kind: "Other", name: "not-the-controller" },
    { apiVersion: "apps/v1", kind, name, controller: true },
  ],
});

describe("podWorkloadName", () => {
  const cases: [string, KubeObject, string][] = [
    ["a pod of its own", pod("solo"), "solo"],
    [
      "a Deployment's pod: its ReplicaSet without the template hash",
      pod("web-7d9f8b6c5-x2kq4", controller("ReplicaSet", "web-7d9f8b6c5"), {
        "pod-template-hash": "7d9f8b6c5",
      }),
      "web",
    ],
    [
      "a ReplicaSet that does not end with the hash keeps its name",
      pod("rs-abc", controller("ReplicaSet", "plain-rs"), { "pod-template-hash": "7d9f8b6c5" }),
      "plain-rs",
    ],
    [
      "an Argo Rollout's pod",
      pod("api-5c6d-1", controller("ReplicaSet", "api-5c6d"), { "rollouts-pod-template-hash": "5c6d" }),
      "api",
    ],
    ["a StatefulSet's pod", pod("db-0", controller("StatefulSet", "db")), "db"],
    ["a DaemonSet's pod", pod("agent-x7z", controller("DaemonSet", "agent")), "agent"],
    ["a Job's pod", pod("migrate-abc", controller("Job", "migrate")), "migrate"],
    ["a CronJob's Job's pod", pod("report-28391040-abc", controller("Job", "report-28391040")), "report"],
    [
      "a Job named with fewer digits is the Job",
      pod("j-1234567-a", controller("Job", "j-1234567")),
      "j-1234567",
    ],
    [
      "an OpenShift DeploymentConfig's pod",
      pod("shop-3-abc", controller("ReplicationController", "shop-3"), { deploymentconfig: "shop" }),
      "shop",
    ],
    [
      "the workload-name label wins",
      pod("web-7d9f8b6c5-x2kq4", controller("ReplicaSet", "web-7d9f8b6c5"), {
        "pod-template-hash": "7d9f8b6c5",
        "service.istio.io/workload-name": "storefront",
      }),
      "storefront",
    ],
    [
      "a name not generated is the pod's own, owners or not",
      pod("static", { ownerReferences: [{ kind: "Node", name: "node-a", controller: true }] }),
      "static",
    ],
    ["a generated name without a controller", pod("x-abc", { generateName: "x-" }), "x-abc"],
    [
      "malformed owners are ignored",
      pod("m-abc", { generateName: "m-", ownerReferences: "nope" } as never),
      "m-abc",
    ],
  ];
  for (const [name, input, want] of cases) {
    it(name, () => assert.equal(podWorkloadName(input), want));
  }
});

describe("canonicalService", () => {
  it("takes Istio's labels, then Kubernetes' recommended ones, then app and version", () => {
    assert.deepEqual(canonicalService({}, "web"), ["web", "latest"]);
    assert.deepEqual(canonicalService({ app: "a", version: "v1" }, "web"), ["a", "v1"]);
    assert.deepEqual(
      canonicalService(
        { app: "a", version: "v1", "app.kubernetes.io/name": "k", "app.kubernetes.io/version": "2.0" },
        "web",
      ),
      ["k", "2.0"],
    );
    assert.deepEqual(
      canonicalService(
        {
          "app.kubernetes.io/name": "k",
          "service.istio.io/canonical-name": "c",
          "service.istio.io/canonical-revision": "r",
        },
        "web",
      ),
      ["c", "r"],
    );
  });
});
