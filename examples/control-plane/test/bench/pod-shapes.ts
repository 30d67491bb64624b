// Pods for the scale benches: the minimal shape (what the mesh reads, and little else) or one shaped
// like a real cluster's Pod (managedFields, container image, env, probes, volumes, tolerations,
// conditions, container statuses), about 3.7 KB of JSON.
import type { RawKubeObject } from "../../src/sources/kube-client.js";

/** `base.x.y` for the i-th address (250 per /24). */
export function ipOf(base: string, i: number): string {
  return `${base}.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
}

/** Pod `p` of the bench: Service `p % services`, node `p % 100`, namespace `ns-(service % 10)`. */
export function benchPod(p: number, services: number, realistic: boolean): RawKubeObject {
  const ip = ipOf;
  const s = p % services;
  const meta = {
    name: `pod-${p}`,
    namespace: `ns-${s % 10}`,
    uid: `6f1c${String(p).padStart(4, "0")}-8d2a-4c1e-9b7f-0a3e5d${String(p).padStart(6, "0")}`,
    resourceVersion: String(1000 + p),
    creationTimestamp: "2026-12-05T10:00:00Z",
    labels: { app: `svc-${s}` },
  };
  if (!realistic) {
    return {
      apiVersion: "v1",
      kind: "Pod",
      metadata: meta,
      spec: {
        nodeName: `node-${p % 100}`,
        serviceAccountName: `sa-${s}`,
        containers: [{ name: "app", image: "app", ports: [{ containerPort: 8080 }] }],
      },
      status: { phase: "Running", podIP: ip("127.10", p) },
    };
  }
  const time = "2026-12-05T10:00:00Z";
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      ...meta,
      generateName: `svc-${s}-5c8d7b9f4-`,
      labels: { app: `svc-${s}`, "pod-template-hash": "5c8d7b9f4", version: "v1" },
      annotations: { "kubectl.kubernetes.io/restartedAt": time },
      ownerReferences: [
        {
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: `svc-${s}-5c8d7b9f4`,
          uid: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
      managedFields: [
        {
          manager: "kube-controller-manager",
          operation: "Update",
          apiVersion: "v1",
          time,
          fieldsType: "FieldsV1",
          fieldsV1: {
            "f:metadata": { "f:generateName": {}, "f:labels": { ".": {}, "f:app": {}, "f:version": {} } },
            "f:spec": { "f:containers": { 'k:{"name":"app"}': { ".": {}, "f:image": {}, "f:ports": {} } } },
          },
        },
        {
          manager: "kubelet",
          operation: "Update",
          apiVersion: "v1",
          time,
          fieldsType: "FieldsV1",
          subresource: "status",
          fieldsV1: { "f:status": { "f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {} } },
        },
      ],
    },
    spec: {
      nodeName: `node-${p % 100}`,
      serviceAccountName: `sa-${s}`,
      containers: [
        {
          name: "app",
          image: "registry.example.com/team/app:1.24.3",
          ports: [{ name: "http", containerPort: 8080, protocol: "TCP" }],
          env: [
            { name: "LOG_LEVEL", value: "info" },
            { name: "POD_NAME", valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "metadata.name" } } },
          ],
          resources: { limits: { memory: "256Mi" }, requests: { cpu: "100m", memory: "128Mi" } },
          readinessProbe: {
            httpGet: { path: "/ready", port: 8080, scheme: "HTTP" },
            periodSeconds: 10,
            timeoutSeconds: 1,
            successThreshold: 1,
            failureThreshold: 3,
          },
          volumeMounts: [
            {
              name: "kube-api-access-x7k2p",
              readOnly: true,
              mountPath: "/var/run/secrets/kubernetes.io/serviceaccount",
            },
          ],
          terminationMessagePath: "/dev/termination-log",
          terminationMessagePolicy: "File",
          imagePullPolicy: "IfNotPresent",
        },
      ],
      volumes: [
        {
          name: "kube-api-access-x7k2p",
          projected: {
            sources: [
              { serviceAccountToken: { expirationSeconds: 3607, path: "token" } },
              { configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] } },
            ],
            defaultMode: 420,
          },
        },
      ],
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 30,
      dnsPolicy: "ClusterFirst",
      schedulerName: "default-scheduler",
      tolerations: [
        {
          key: "node.kubernetes.io/not-ready",
          operator: "Exists",
          effect: "NoExecute",
          tolerationSeconds: 300,
        },
        {
          key: "node.kubernetes.io/unreachable",
          operator: "Exists",
          effect: "NoExecute",
          tolerationSeconds: 300,
        },
      ],
      priority: 0,
      enableServiceLinks: true,
      preemptionPolicy: "PreemptLowerPriority",
    },
    status: {
      phase: "Running",
      conditions: [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
      ].map((type) => ({ type, status: "True", lastProbeTime: null, lastTransitionTime: time })),
      hostIP: ip("192.168", p % 100),
      hostIPs: [{ ip: ip("192.168", p % 100) }],
      podIP: ip("127.10", p),
      podIPs: [{ ip: ip("127.10", p) }],
      startTime: time,
      containerStatuses: [
        {
          name: "app",
          state: { running: { startedAt: time } },
          lastState: {},
          ready: true,
          restartCount: 0,
          image: "registry.example.com/team/app:1.24.3",
          imageID:
            "registry.example.com/team/app@sha256:0d5f1e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80",
          containerID: `containerd://${String(p).padStart(64, "0")}`,
          started: true,
        },
      ],
      qosClass: "Burstable",
    },
  };
}
