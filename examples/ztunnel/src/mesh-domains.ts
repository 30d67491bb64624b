// The two names a mesh is installed with that its proxies must be told as well as its control plane:
// the SPIFFE trust domain (meshConfig `trustDomain`: every identity, the control plane's included, is
// `spiffe://<trust domain>/ns/<namespace>/sa/<account>`) and the cluster's DNS domain (Service hosts are
// `<name>.<namespace>.svc.<domain>`). Both are `cluster.local` unless the cluster was set up otherwise.
// A proxy told the wrong trust domain refuses the control plane's certificate; one told the wrong DNS
// domain knows no Service by its name.
import { parseTrustDomain, SpiffeError } from "@ambient/spiffe";

/** Istio's trust domain when meshConfig names none. */
export const DEFAULT_TRUST_DOMAIN = "cluster.local";

/** Kubernetes' default cluster DNS domain. */
export const DEFAULT_CLUSTER_DOMAIN = "cluster.local";

/** The variable Istio's ztunnel and pilot-agent read the trust domain from. */
export const TRUST_DOMAIN_VARIABLES = ["TRUST_DOMAIN"] as const;

/** The variable Istio's ztunnel reads the cluster's DNS domain from. */
export const CLUSTER_DOMAIN_VARIABLES = ["CLUSTER_DOMAIN"] as const;

/** The control plane's identity in `trustDomain`, as istiod's: `spiffe://<td>/ns/istio-system/sa/istiod`. */
export function controlPlaneIdentityOf(trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/istio-system/sa/istiod`;
}

/** What is wrong with `text` as a SPIFFE trust domain, or undefined when nothing is. */
export function trustDomainProblem(text: string): string | undefined {
  try {
    parseTrustDomain(text);
    return undefined;
  } catch (err) {
    if (err instanceof SpiffeError) return `is not a trust domain: ${err.message}`;
    throw err;
  }
}

const DNS_LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
const DNS_DOMAIN = new RegExp(`^${DNS_LABEL}(\\.${DNS_LABEL})*$`);

/**
 * What is wrong with `text` as a cluster DNS domain (lower-case DNS-1123 labels joined by dots, at most
 * 253 characters, no trailing dot), or undefined when nothing is.
 */
export function clusterDomainProblem(text: string): string | undefined {
  return text.length <= 253 && DNS_DOMAIN.test(text)
    ? undefined
    : `is not a DNS domain (lower-case labels of a-z, 0-9 and -, joined by dots): ${JSON.stringify(text)}`;
}

/** A setting read from a command line and the environment, or why it cannot be one. */
export type SettingChoice = { kind: "ok"; value: string } | { kind: "error"; message: string };

/**
 * A proxy setting as Istio's proxies read it: the flag (`flagName`) when given, else the first of
 * `variables` set in `env`, else `fallback`. A bad value is an error that names where it came from and
 * says what is wrong (`problem`); a variable the flag overrides is not read.
 */
export function settingFrom(
  flagName: string,
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  variables: readonly string[],
  fallback: string,
  problem: (value: string) => string | undefined,
): SettingChoice {
  const source =
    flag !== undefined
      ? { name: flagName, value: flag }
      : variables.map((name) => ({ name, value: env[name] })).find((s) => s.value !== undefined);
  if (source?.value === undefined) return { kind: "ok", value: fallback };
  const wrong = problem(source.value);
  return wrong === undefined
    ? { kind: "ok", value: source.value }
    : { kind: "error", message: `${source.name} ${wrong}` };
}

/** `--trust-domain`, else `TRUST_DOMAIN`, else {@link DEFAULT_TRUST_DOMAIN}. */
export function trustDomainFrom(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): SettingChoice {
  return settingFrom(
    "--trust-domain",
    flag,
    env,
    TRUST_DOMAIN_VARIABLES,
    DEFAULT_TRUST_DOMAIN,
    trustDomainProblem,
  );
}

/** `--cluster-domain`, else `CLUSTER_DOMAIN`, else {@link DEFAULT_CLUSTER_DOMAIN}. */
export function clusterDomainFrom(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): SettingChoice {
  return settingFrom(
    "--cluster-domain",
    flag,
    env,
    CLUSTER_DOMAIN_VARIABLES,
    DEFAULT_CLUSTER_DOMAIN,
    clusterDomainProblem,
  );
}
