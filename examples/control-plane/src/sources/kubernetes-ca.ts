// Where every replica's CA comes from on Kubernetes, as istiod does it: a plugged-in `cacerts` Secret
// when the operator made one, else the self-signed `istio-ca-secret`, which the first replica to start
// creates and the others read. So all replicas sign with, and publish, the same root.
import { type CaCertsPem, createCertificateAuthority } from "@ambient/spiffe/ca";
import type { KubeConfig } from "@kubernetes/client-node";
import { ControlPlaneError } from "../errors.js";
import { KubeRequestError, kubeRequest } from "./kube-client.js";

/** Secret of a plugged-in CA; istiod's `cacerts`. */
export const PLUGGED_CA_SECRET = "cacerts";
/** Secret of the self-signed CA; istiod's `istio-ca-secret`. */
export const SELF_SIGNED_CA_SECRET = "istio-ca-secret";

/** Options of {@link loadCaFromSecrets}. */
export interface CaSecretOptions {
  kubeConfig: KubeConfig;
  /** Namespace of the Secrets. Default `istio-system`. */
  namespace?: string;
  /** Trust domain of a root created here. Default `cluster.local`. */
  trustDomain?: string;
}

/** Which Secret the CA came from, and whether this replica created it. */
export interface CaFromSecret {
  cacerts: CaCertsPem;
  secret: string;
  created: boolean;
}

function decode(data: Record<string, string> | undefined, key: string): string | undefined {
  const value = data?.[key];
  return value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");
}

async function readSecret(
  kc: KubeConfig,
  namespace: string,
  name: string,
): Promise<Record<string, string> | undefined> {
  try {
    const secret = (await kubeRequest(kc, "GET", `/api/v1/namespaces/${namespace}/secrets/${name}`)) as {
      data?: Record<string, string>;
    };
    return secret.data ?? {};
  } catch (err) {
    if (err instanceof KubeRequestError && err.statusCode === 404) return undefined;
    throw err;
  }
}

function fromSecret(name: string, data: Record<string, string>): CaCertsPem {
  const caCertPem = decode(data, "ca-cert.pem");
  const caKeyPem = decode(data, "ca-key.pem");
  // istio-ca-secret holds a self-signed root: the signing certificate is the root.
  const rootCertPem =
    decode(data, "root-cert.pem") ?? (name === SELF_SIGNED_CA_SECRET ? caCertPem : undefined);
  const certChainPem = decode(data, "cert-chain.pem");
  if (caCertPem === undefined || caKeyPem === undefined || rootCertPem === undefined) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_STATE",
      `Secret ${name} lacks ca-cert.pem, ca-key.pem${name === PLUGGED_CA_SECRET ? " or root-cert.pem" : ""}`,
    );
  }
  return {
    caCertPem,
    caKeyPem,
    rootCertPem,
    ...(certChainPem === undefined || certChainPem === "" ? {} : { certChainPem }),
  };
}

/**
 * Loads the CA from `cacerts`, else `istio-ca-secret`, creating the latter with a new self-signed root
 * when neither exists. Two replicas that start together both try to create it: the API server keeps
 * the first (409 for the second), and the second uses the one that was kept.
 */
export async function loadCaFromSecrets(options: CaSecretOptions): Promise<CaFromSecret> {
  const kc = options.kubeConfig;
  const namespace = options.namespace ?? "istio-system";
  try {
    const plugged = await readSecret(kc, namespace, PLUGGED_CA_SECRET);
    if (plugged !== undefined)
      return { cacerts: fromSecret(PLUGGED_CA_SECRET, plugged), secret: PLUGGED_CA_SECRET, created: false };
    const existing = await readSecret(kc, namespace, SELF_SIGNED_CA_SECRET);
    if (existing !== undefined) {
      return {
        cacerts: fromSecret(SELF_SIGNED_CA_SECRET, existing),
        secret: SELF_SIGNED_CA_SECRET,
        created: false,
      };
    }
    const generated = (
      await createCertificateAuthority({ trustDomain: options.trustDomain ?? "cluster.local" })
    ).exportCacerts();
    const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
    try {
      await kubeRequest(kc, "POST", `/api/v1/namespaces/${namespace}/secrets`, {
        contentType: "application/json",
        value: {
          apiVersion: "v1",
          kind: "Secret",
          type: "istio.io/ca-root",
          metadata: { name: SELF_SIGNED_CA_SECRET, namespace },
          data: { "ca-cert.pem": b64(generated.caCertPem), "ca-key.pem": b64(generated.caKeyPem) },
        },
      });
      return {
        cacerts: {
          caCertPem: generated.caCertPem,
          caKeyPem: generated.caKeyPem,
          rootCertPem: generated.caCertPem,
        },
        secret: SELF_SIGNED_CA_SECRET,
        created: true,
      };
    } catch (err) {
      if (!(err instanceof KubeRequestError && err.statusCode === 409)) throw err;
      const winner = await readSecret(kc, namespace, SELF_SIGNED_CA_SECRET);
      if (winner === undefined) throw err;
      return {
        cacerts: fromSecret(SELF_SIGNED_CA_SECRET, winner),
        secret: SELF_SIGNED_CA_SECRET,
        created: false,
      };
    }
  } catch (cause) {
    if (cause instanceof ControlPlaneError) throw cause;
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_STATE",
      `cannot load the CA from Secret ${namespace}/${PLUGGED_CA_SECRET} or ${SELF_SIGNED_CA_SECRET}: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
  }
}

/**
 * Writes a rotated self-signed root back to `istio-ca-secret` (the leader does, after a rotation):
 * `ca-cert.pem` the new root, `ca-key.pem` its key (unchanged by a re-issue), `root-cert.pem` every
 * root of the bundle, so a replica that starts later trusts the old one too. A concurrent write (409)
 * is read again and retried once.
 */
export async function writeSelfSignedCaSecret(
  kc: KubeConfig,
  namespace: string,
  cacerts: CaCertsPem,
): Promise<void> {
  const path = `/api/v1/namespaces/${namespace}/secrets/${SELF_SIGNED_CA_SECRET}`;
  const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
  for (let attempt = 0; ; attempt++) {
    const current = (await kubeRequest(kc, "GET", path)) as {
      metadata?: { resourceVersion?: string; labels?: Record<string, string> };
      type?: string;
    };
    try {
      await kubeRequest(kc, "PUT", path, {
        contentType: "application/json",
        value: {
          apiVersion: "v1",
          kind: "Secret",
          type: current.type ?? "istio.io/ca-root",
          metadata: {
            name: SELF_SIGNED_CA_SECRET,
            namespace,
            ...(current.metadata?.resourceVersion === undefined
              ? {}
              : { resourceVersion: current.metadata.resourceVersion }),
            ...(current.metadata?.labels === undefined ? {} : { labels: current.metadata.labels }),
          },
          data: {
            "ca-cert.pem": b64(cacerts.caCertPem),
            "ca-key.pem": b64(cacerts.caKeyPem),
            "root-cert.pem": b64(cacerts.rootCertPem),
          },
        },
      });
      return;
    } catch (err) {
      if (attempt === 0 && err instanceof KubeRequestError && err.statusCode === 409) continue;
      throw err;
    }
  }
}

/** The signing root `istio-ca-secret` holds now (`ca-cert.pem`), or undefined when it has none. */
export async function readSelfSignedCaRoot(kc: KubeConfig, namespace: string): Promise<string | undefined> {
  const data = await readSecret(kc, namespace, SELF_SIGNED_CA_SECRET);
  return decode(data, "ca-cert.pem");
}
