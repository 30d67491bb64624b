// The names telemetry groups a workload's traffic by, as istiod derives them: the workload name (a
// pod's Deployment, CronJob or other controller, not the pod) and the canonical service name and
// revision (Istio's labels, then Kubernetes' recommended ones, then the older `app` / `version`).
import type { KubeObject } from "./manifests.js";
import { isRecord } from "./manifests.js";

/** Label that names a workload outright (istiod `label.ServiceWorkloadName`). */
export const WORKLOAD_NAME_LABEL = "service.istio.io/workload-name";

/** A Job name that a CronJob made: the CronJob's name and an 8 to 10 digit schedule time. */
const CRON_JOB_NAME = /^(.+)-\d{8,10}$/;

/**
 * The workload a pod belongs to, as istiod names it (`GetWorkloadMetaFromPod`): the
 * `service.istio.io/workload-name` label; else, for a pod whose name was generated, its controller's
 * name (a ReplicaSet's without its `pod-template-hash` suffix, so its Deployment's; an Argo Rollout's
 * likewise; an OpenShift DeploymentConfig's from the `deploymentconfig` label; a CronJob's for a Job
 * named `<cronjob>-<8 to 10 digits>`); else the pod's own name.
 */
export function podWorkloadName(pod: KubeObject): string {
  const meta = pod.metadata as KubeObject["metadata"] & Record<string, unknown>;
  const labels = meta.labels ?? {};
  const named = labels[WORKLOAD_NAME_LABEL];
  if (named !== undefined) return named;
  if (typeof meta.generateName !== "string" || meta.generateName === "") return meta.name;
  const refs = Array.isArray(meta.ownerReferences) ? meta.ownerReferences : [];
  const controller = refs.find((r: unknown) => isRecord(r) && r.controller === true) as
    | Record<string, unknown>
    | undefined;
  if (controller === undefined || typeof controller.name !== "string" || controller.name === "") {
    return meta.name;
  }
  const name = controller.name;
  switch (controller.kind) {
    case "ReplicaSet":
      // A Deployment's (or an Argo Rollout's) ReplicaSet is named after it plus the template hash.
      for (const key of ["pod-template-hash", "rollouts-pod-template-hash"]) {
        const hash = labels[key];
        if (hash === undefined || hash === "" || !name.endsWith(hash)) continue;
        return name.endsWith(`-${hash}`) ? name.slice(0, name.length - hash.length - 1) : name;
      }
      return name;
    case "ReplicationController":
      return labels.deploymentconfig || name;
    case "Job":
      return CRON_JOB_NAME.exec(name)?.[1] ?? name;
    default:
      return name;
  }
}

/**
 * istiod `CanonicalService`: the canonical name (`service.istio.io/canonical-name`,
 * `app.kubernetes.io/name`, `app`, else the workload name) and revision
 * (`service.istio.io/canonical-revision`, `app.kubernetes.io/version`, `version`, else `latest`).
 */
export function canonicalService(labels: Record<string, string>, workloadName: string): [string, string] {
  return [
    labels["service.istio.io/canonical-name"] ??
      labels["app.kubernetes.io/name"] ??
      labels.app ??
      workloadName,
    labels["service.istio.io/canonical-revision"] ??
      labels["app.kubernetes.io/version"] ??
      labels.version ??
      "latest",
  ];
}
