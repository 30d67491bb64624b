// The Kubernetes mode's pure decisions, as tables: which Gateway status to write, which identities a
// node's pods have, what the translation sees of an API object, and what the cache keeps.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { waypointStatusUpdates } from "./gateway-status.js";
import type { RawKubeObject } from "./kube-client.js";
import { kubeObjectFromApi, MESH_RESOURCES, trimForCache } from "./kubernetes-source.js";
import { identitiesOfPods } from "./token-review-authenticator.js";

const gw = (name: string, cls: string, addresses?: unknown[]): RawKubeObject => ({
  metadata: { name, namespace: "demo" },
  spec: { gatewayClassName: cls },
  ...(addresses === undefined ? {} : { status: { addresses } }),
});

describe("waypointStatusUpdates: the address", () => {
  const services: Record<string, string> = { "demo/wp": "10.0.0.5", "demo/headless": "None" };
  const service = (ns: string, name: string): RawKubeObject | undefined => {
    const ip = services[`${ns}/${name}`];
    return ip === undefined ? undefined : { metadata: { name, namespace: ns }, spec: { clusterIP: ip } };
  };
  const rows: [string, RawKubeObject, string | undefined][] = [
    ["a waypoint without status gets its Service's cluster IP", gw("wp", "istio-waypoint"), "10.0.0.5"],
    [
      "a stale address is replaced",
      gw("wp", "istio-waypoint", [{ type: "IPAddress", value: "10.0.0.9" }]),
      "10.0.0.5",
    ],
    [
      "extra addresses are replaced",
      gw("wp", "istio-waypoint", [{ value: "10.0.0.5" }, { value: "10.0.0.6" }]),
      "10.0.0.5",
    ],
    [
      "a current status is left alone",
      gw("wp", "istio-waypoint", [{ type: "IPAddress", value: "10.0.0.5" }]),
      undefined,
    ],
    ["another class is not ours", gw("wp", "istio"), undefined],
    ["no Service yet: no address to write", gw("missing", "istio-waypoint"), undefined],
    ["a headless Service has no address", gw("headless", "istio-waypoint"), undefined],
  ];
  for (const [name, gateway, want] of rows) {
    it(name, () => {
      const got = waypointStatusUpdates([gateway], service);
      assert.deepEqual(
        got.flatMap((u) => (u.status.addresses === undefined ? [] : [u.status.addresses])),
        want === undefined ? [] : [[{ type: "IPAddress", value: want }]],
      );
    });
  }
});

describe("identitiesOfPods", () => {
  const pod = (ns: string | undefined, sa: string | undefined, phase?: string): RawKubeObject => ({
    metadata: { name: "p", ...(ns === undefined ? {} : { namespace: ns }) },
    spec: sa === undefined ? {} : { serviceAccountName: sa },
    status: phase === undefined ? {} : { phase },
  });
  const rows: [string, RawKubeObject, string | undefined][] = [
    [
      "a running pod: its service account",
      pod("demo", "sleep", "Running"),
      "spiffe://cluster.local/ns/demo/sa/sleep",
    ],
    [
      "no service account: default",
      pod("demo", undefined, "Pending"),
      "spiffe://cluster.local/ns/demo/sa/default",
    ],
    ["a finished pod needs no certificate", pod("demo", "sleep", "Succeeded"), undefined],
    ["a failed pod neither", pod("demo", "sleep", "Failed"), undefined],
    ["no namespace: not a pod we can name", pod(undefined, "sleep"), undefined],
  ];
  for (const [name, p, want] of rows) {
    it(name, () => {
      assert.deepEqual(identitiesOfPods([p]).map(String), want === undefined ? [] : [want]);
    });
  }
});

describe("kubeObjectFromApi and trimForCache", () => {
  const podResource = MESH_RESOURCES.find((r) => r.kind === "Pod");
  const nsResource = MESH_RESOURCES.find((r) => r.kind === "Namespace");
  it("takes kind and apiVersion from the resource (list items may lack them) and keeps string labels", () => {
    assert.ok(podResource && nsResource);
    const got = kubeObjectFromApi(podResource, {
      metadata: { name: "a", namespace: "demo", uid: "u1", labels: { app: "x", n: 1 as unknown as string } },
      spec: { nodeName: "n" },
    });
    assert.deepEqual(got, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "a", namespace: "demo", uid: "u1", labels: { app: "x" } },
      source: "Pod/demo/a",
      spec: { nodeName: "n" },
    });
    // A cluster-scoped object keeps no namespace even if one is sent.
    assert.equal(
      kubeObjectFromApi(nsResource, { metadata: { name: "demo", namespace: "x" } })?.metadata.namespace,
      undefined,
    );
    assert.equal(kubeObjectFromApi(podResource, { metadata: { name: "" } }), undefined);
  });

  it("drops managedFields and kubectl's last-applied annotation, and nothing else", () => {
    const raw: RawKubeObject = {
      metadata: {
        name: "a",
        managedFields: [{}],
        annotations: {
          "kubectl.kubernetes.io/last-applied-configuration": "{}",
          "ambient.dev/address": "10.0.0.1",
        },
      },
      spec: { x: 1 },
    };
    trimForCache(raw);
    assert.deepEqual(raw, {
      metadata: { name: "a", annotations: { "ambient.dev/address": "10.0.0.1" } },
      spec: { x: 1 },
    });
    const only: RawKubeObject = {
      metadata: { name: "b", annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" } },
    };
    assert.deepEqual(trimForCache(only), { metadata: { name: "b" } });
  });
});
