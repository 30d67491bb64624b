// Which names the DNS proxy answers itself, and with what: the mesh's Service hostnames (Kubernetes
// Services and ServiceEntry hosts with an address) as the client pod would spell them. Everything else
// is forwarded upstream. Pure: the store is read through the small interface below.
import type { Service, Workload } from "@ambient/xds";
import { canonicalFromBytes } from "./ip-address.js";
import type { ServiceMatch } from "./workload-store.js";

/** TTL of the records the proxy answers itself, in seconds (Istio's ztunnel uses 30). */
export const MESH_RECORD_TTL = 30;

/** What the name lookup reads from the workload store. */
export interface MeshNameSource {
  /** Every Service with this hostname, in a stable order. */
  servicesByHostname(hostname: string): readonly Service[];
  /**
   * The endpoints of a Service, for one without a VIP: its healthy workloads, and the others too when
   * its health policy is ALLOW_ALL. The proxy asks with `servicePort` 0 (no port in particular), so
   * every workload that lists the Service counts whatever ports it has.
   */
  endpointsOf(match: ServiceMatch): readonly { workload: Workload }[];
}

/** The pod asking, as far as names are concerned. */
export interface DnsClient {
  namespace: string;
  /** Its network: a VIP on another network is not answered. */
  network: string;
}

/** How the proxy answers an A or AAAA question. */
export type MeshAnswer =
  /** Not a mesh name (or not for this client): ask the upstream resolver. */
  | { kind: "forward" }
  | {
      kind: "answer";
      /** `namespace/hostname` of the Service found. */
      service: string;
      /**
       * Set when the name was found after stripping one of the client's search domains (the stub
       * resolver appended it): when `addresses` is not empty, the answer maps the asked name to this
       * one with a CNAME, and the address records are owned by it; when it is, the answer has no
       * records at all.
       */
      canonicalName?: string;
      /** The addresses of the asked family; empty is a NOERROR answer with no records. */
      addresses: string[];
    };

/** One candidate spelling of the asked name. */
interface Alias {
  name: string;
  /** The asked name with a search domain removed, when this alias came from one. */
  stripped?: string;
}

/** `name` without a trailing dot, in lower case (DNS names compare without case). */
function normalize(name: string): string {
  return (name.endsWith(".") ? name.slice(0, -1) : name).toLowerCase();
}

/** The search domains a Kubernetes pod in `namespace` has (kubelet's ClusterFirst resolv.conf). */
export function kubernetesSearchDomains(namespace: string, clusterDomain: string): string[] {
  return [`${namespace}.svc.${clusterDomain}`, `svc.${clusterDomain}`, clusterDomain];
}

/**
 * The fully qualified names a short Kubernetes name can stand for, from a pod in `namespace`, in
 * ztunnel's order (`to_kube_fqdns`): a Service's `name` -> `name.<namespace>.svc.<domain>`,
 * `name.ns` -> `name.ns.svc.<domain>`, `name.ns.svc` -> `name.ns.svc.<domain>`; and a pod's
 * `host.sub` -> `host.sub.<namespace>.svc.<domain>`, `host.sub.ns` -> `host.sub.ns.svc.<domain>`,
 * `host.sub.ns.svc` -> `host.sub.ns.svc.<domain>`. Longer names are taken as they are.
 */
export function kubernetesExpansions(name: string, namespace: string, clusterDomain: string): string[] {
  const labels = name === "" ? 0 : name.split(".").length;
  const svcDomain = `svc.${clusterDomain}`;
  if (labels === 1) return [`${name}.${namespace}.${svcDomain}`];
  if (labels === 2) return [`${name}.${svcDomain}`, `${name}.${namespace}.${svcDomain}`];
  if (labels === 3) {
    return name.endsWith(".svc")
      ? [`${name}.${clusterDomain}`, `${name}.${svcDomain}`]
      : [`${name}.${svcDomain}`];
  }
  if (labels === 4 && name.endsWith(".svc")) return [`${name}.${clusterDomain}`];
  return [];
}

/**
 * Every spelling worth looking up for `name`, in the order a pod's resolver would find them: the name
 * itself, then for each search domain it ends with, the name without it (`stripped`); each of these
 * after its Kubernetes expansions. `foo.ns.svc.cluster.local.client-ns.svc.cluster.local` is what a
 * stub resolver sends for `foo.ns.svc.cluster.local` when its first search domain is tried first.
 *
 * Expansions come before the short name they expand (ztunnel puts them after): `web` from `a` is
 * `web.a.svc.<domain>`, and `db.b` is `db.b.svc.<domain>`, as the pod's resolver, trying its search
 * domains first, would have it from the cluster DNS. A ServiceEntry host spelled `web` or `db.b` is
 * answered only when no Kubernetes name does.
 */
function aliasesOf(name: string, client: DnsClient, clusterDomain: string): Alias[] {
  const out: Alias[] = [];
  const seen = new Set<string>();
  const add = (alias: Alias) => {
    if (alias.name === "" || seen.has(alias.name)) return;
    seen.add(alias.name);
    out.push(alias);
  };
  const addWithExpansions = (base: string, stripped?: string) => {
    const from = stripped === undefined ? {} : { stripped };
    for (const fqdn of kubernetesExpansions(base, client.namespace, clusterDomain)) {
      add({ name: fqdn, ...from });
    }
    add({ name: base, ...from });
  };
  addWithExpansions(name);
  for (const domain of kubernetesSearchDomains(client.namespace, clusterDomain)) {
    if (name.endsWith(`.${domain}`)) {
      const stripped = name.slice(0, -(domain.length + 1));
      addWithExpansions(stripped, stripped);
    }
  }
  return out;
}

/**
 * Whether a wildcard host of a Service in `namespace` may answer the spelling `name`.
 *
 * The cluster domain is Kubernetes' zone: under it the cluster DNS has Services
 * (`<service>.<ns>.svc.<domain>`), pods of headless Services (`<hostname>.<subdomain>.<ns>.svc.<domain>`)
 * and nothing a ServiceEntry should claim by pattern. A name there belongs to the namespace `<ns>`
 * it names: only a wildcard from that namespace (`*.peers.b.svc.<domain>` in `b`, or a wider one from
 * `b`) answers it, and only in those two shapes. So a `*.svc.<domain>` (or `*.<domain>`, `*.local`)
 * from one namespace cannot answer for another namespace's Services, nor for the names a pod's
 * resolver makes by appending its search domains to anything else: `db`, `db.b.svc.<domain>.a.svc.<domain>`,
 * `google.com.a.svc.<domain>`, `google.com.svc.<domain>` (unless a namespace is called `com`: then
 * the cluster DNS gives that name to it too), `google.com.<domain>`. Those still find a wildcard
 * through their other spellings (`google.com` without the search domain), so a pod gets the same
 * answer for a name whichever of its search forms it asks first. ztunnel lets any wildcard match any
 * spelling; this is stricter only inside the cluster domain.
 */
function wildcardMayAnswer(name: string, namespace: string, clusterDomain: string): boolean {
  if (name !== clusterDomain && !name.endsWith(`.${clusterDomain}`)) return true;
  const svcSuffix = `.svc.${clusterDomain}`;
  if (!name.endsWith(svcSuffix)) return false;
  const labels = name.slice(0, -svcSuffix.length).split(".");
  return (labels.length === 2 || labels.length === 3) && labels[labels.length - 1] === namespace;
}

/** `a.b.c` -> `a.b.c`, `*.b.c`, `*.c`: a ServiceEntry host may be a wildcard. */
function wildcardsOf(name: string): string[] {
  const out = [name];
  let rest = name;
  for (let dot = rest.indexOf("."); dot !== -1; dot = rest.indexOf(".")) {
    rest = rest.slice(dot + 1);
    out.push(`*.${rest}`);
  }
  return out;
}

/** The family of address a question asks for. */
export type AddressFamily = 4 | 6;

/**
 * The answer to an A (`family` 4) or AAAA (6) question for `asked` from `client`: a mesh Service's
 * addresses when one of the name's spellings is a Service hostname the client may see, else forward.
 * A Service with addresses answers with those on the client's network; a Kubernetes Service without
 * any (headless) with its endpoints' addresses (healthy pods, all of them under ALLOW_ALL); a Service
 * that is single-stack answers the other family with no records. When several namespaces have the
 * hostname, the client's own wins, then the canonical one, then the first by namespace.
 */
export function resolveMeshName(
  source: MeshNameSource,
  client: DnsClient,
  asked: string,
  family: AddressFamily,
  clusterDomain = "cluster.local",
): MeshAnswer {
  const name = normalize(asked);
  if (name === "") return { kind: "forward" };
  const kubernetesSuffix = `.svc.${clusterDomain}`;
  const servicesFor = (hostname: string): Service[] =>
    source.servicesByHostname(hostname).filter(
      (s) =>
        // A Service the client's namespace may not see is not its name to resolve.
        (s.visibility !== "NAMESPACE" || s.namespace === client.namespace) &&
        // Without an address only a Kubernetes (headless) Service is answered here; a
        // ServiceEntry host without one (or with only ranges) is left to the upstream resolver.
        (hostAddresses(s).length > 0 || s.hostname.endsWith(kubernetesSuffix)),
    );
  // The client's own namespace first, then the Service marked canonical (a Kubernetes Service,
  // which a ServiceEntry elsewhere reusing its hostname must not shadow), then the first.
  const best = (services: Service[]): Service | undefined =>
    services.find((s) => s.namespace === client.namespace) ??
    services.find((s) => s.canonical) ??
    services[0];
  const answer = (service: Service, alias: Alias, wildcard: boolean): MeshAnswer => {
    const key = `${service.namespace}/${service.hostname}`;
    return {
      kind: "answer",
      service: key,
      ...(alias.stripped !== undefined && !wildcard ? { canonicalName: alias.stripped } : {}),
      addresses: familyAllowed(service, family) ? addressesOf(source, service, key, client, family) : [],
    };
  };
  const aliases = aliasesOf(name, client, clusterDomain);
  // Exact hostnames of every spelling first, then wildcards, each pass in the spelling order.
  // ztunnel tries each spelling's wildcards before the next spelling, so a wildcard matching the
  // search-expanded form a pod asks first (`db.b.svc.<domain>.a.svc.<domain>` under
  // `*.svc.<domain>`) won over the Service it stands for.
  for (const alias of aliases) {
    if (alias.name.startsWith("*.")) continue;
    const service = best(servicesFor(alias.name));
    if (service !== undefined) return answer(service, alias, false);
  }
  for (const alias of aliases) {
    for (const candidate of wildcardsOf(alias.name)) {
      if (!candidate.startsWith("*.")) continue;
      const service = best(
        servicesFor(candidate).filter((s) => wildcardMayAnswer(alias.name, s.namespace, clusterDomain)),
      );
      if (service !== undefined) return answer(service, alias, true);
    }
  }
  return { kind: "forward" };
}

/**
 * A Service's own addresses: those without a prefix length or with a full one. A ServiceEntry may
 * list a CIDR (`10.0.0.0/16`, sent with its prefix length) to capture a range; its first address is no
 * more the Service's than any other in the range, so it is never an answer.
 */
function hostAddresses(service: Service): Service["addresses"] {
  return service.addresses.filter((a) => a.length === undefined || a.length === a.address.length * 8);
}

function familyAllowed(service: Service, family: AddressFamily): boolean {
  if (service.ipFamilies === "IPV4_ONLY") return family === 4;
  if (service.ipFamilies === "IPV6_ONLY") return family === 6;
  return true;
}

function addressesOf(
  source: MeshNameSource,
  service: Service,
  key: string,
  client: DnsClient,
  family: AddressFamily,
): string[] {
  const out: string[] = [];
  const vips = hostAddresses(service);
  if (vips.length === 0) {
    // Headless: one address of the family per endpoint. The endpoints follow the Service's health
    // policy, so one that publishes not-ready addresses (ALLOW_ALL) lists pods that are not ready yet,
    // as peers of a StatefulSet need to find each other before any is ready.
    const all = { key, service, servicePort: 0, targetPort: 0, namedTarget: false };
    for (const { workload: w } of source.endpointsOf(all)) {
      for (const bytes of w.addresses) {
        const ip = canonicalFromBytes(bytes);
        if (ip?.family === family) {
          out.push(ip.text);
          break;
        }
      }
    }
    return out;
  }
  for (const vip of vips) {
    const ip = canonicalFromBytes(vip.address);
    if (ip?.family === family && vip.network === client.network) out.push(ip.text);
  }
  return out;
}
