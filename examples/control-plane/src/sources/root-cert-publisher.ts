// The mesh root for pods that do not talk to the CA's Secret: the ConfigMap `istio-ca-root-cert`
// (key `root-cert.pem`), as istiod publishes it, in the control plane's namespace (for ztunnels) and in
// every namespace with a waypoint (for the waypoint pods). Written by the leader only.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { KubeRequestError, kubeRequest } from "./kube-client.js";

/** ConfigMap name; istiod's `istio-ca-root-cert`. */
export const ROOT_CERT_CONFIG_MAP = "istio-ca-root-cert";

/**
 * Publishes the roots (`rootCertPem()`, read at each publish: a rotation changes them) in namespaces;
 * remembers what it wrote where, so a steady state costs no request.
 */
export function createRootCertPublisher(
  kc: KubeConfig,
  rootCertPem: () => string,
  logger: Logger = noopLogger,
) {
  const published = new Map<string, string>();
  const body = (namespace: string, roots: string, resourceVersion?: string) => ({
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: ROOT_CERT_CONFIG_MAP,
      namespace,
      ...(resourceVersion === undefined ? {} : { resourceVersion }),
      labels: { "istio.io/config": "true" },
    },
    data: { "root-cert.pem": roots },
  });
  return {
    /** Makes sure each namespace holds the current root; returns how many ConfigMaps were written. */
    async publish(namespaces: Iterable<string>): Promise<number> {
      let written = 0;
      const roots = rootCertPem();
      for (const namespace of new Set(namespaces)) {
        if (published.get(namespace) === roots) continue;
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
            await kubeRequest(kc, "POST", path, {
              contentType: "application/json",
              value: body(namespace, roots),
            });
            written++;
          } else if (existing.data?.["root-cert.pem"] !== roots) {
            await kubeRequest(kc, "PUT", `${path}/${ROOT_CERT_CONFIG_MAP}`, {
              contentType: "application/json",
              value: body(namespace, roots, existing.metadata?.resourceVersion),
            });
            written++;
          }
          published.set(namespace, roots);
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
