// The mesh root for pods that do not talk to the CA's Secret: the ConfigMap `istio-ca-root-cert`
// (key `root-cert.pem`), as istiod publishes it, in the control plane's namespace (for ztunnels) and in
// every namespace with a waypoint (for the waypoint pods). Written by the leader only.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { KubeRequestError, kubeRequest } from "./kube-client.js";

/** ConfigMap name; istiod's `istio-ca-root-cert`. */
export const ROOT_CERT_CONFIG_MAP = "istio-ca-root-cert";

/** Publishes the root in namespaces; remembers what it wrote so a steady state costs no request. */
export function createRootCertPublisher(kc: KubeConfig, rootCertPem: string, logger: Logger = noopLogger) {
  const published = new Set<string>();
  const body = (namespace: string, resourceVersion?: string) => ({
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: ROOT_CERT_CONFIG_MAP,
      namespace,
      ...(resourceVersion === undefined ? {} : { resourceVersion }),
      labels: { "istio.io/config": "true" },
    },
    data: { "root-cert.pem": rootCertPem },
  });
  return {
    /** Makes sure each namespace holds the current root; returns how many ConfigMaps were written. */
    async publish(namespaces: Iterable<string>): Promise<number> {
      let written = 0;
      for (const namespace of new Set(namespaces)) {
        if (published.has(namespace)) continue;
        const path = `/api/v1/namespaces/${namespace}/configmaps`;
        try {
          let existing:
            | { metadata?: { resourceVersion?: string }; data?: Record<string, string> }
            | undefined;
          try {
            existing = (await kubeRequest(kc, "GET", `${path}/${ROOT_CERT_CONFIG_MAP}`)) as typeof existing;
          } catch (err) {
            if (!(err instanceof KubeRequestError && err.statusCode === 404)) throw err;
          }
          if (existing === undefined) {
            await kubeRequest(kc, "POST", path, { contentType: "application/json", value: body(namespace) });
            written++;
          } else if (existing.data?.["root-cert.pem"] !== rootCertPem) {
            await kubeRequest(kc, "PUT", `${path}/${ROOT_CERT_CONFIG_MAP}`, {
              contentType: "application/json",
              value: body(namespace, existing.metadata?.resourceVersion),
            });
            written++;
          }
          published.add(namespace);
        } catch (err) {
          logger.warn(
            { namespace, err: err instanceof Error ? err.message : String(err) },
            "root certificate ConfigMap write failed",
          );
        }
      }
      return written;
    },
    /** Forgets what was written (on gaining leadership: another leader may have changed it). */
    reset(): void {
      published.clear();
    },
  };
}
