// The DNS proxy each served pod gets on 127.0.0.1:15053 inside its namespace (the capture rules send
// the pod's DNS there): mesh Service names are answered from the workload store, with the pod as the
// client (its namespace decides short names and search domains); everything else goes to the
// upstream resolvers unchanged. Istio's ztunnel metrics: istio_dns_requests_total and the
// istio_dns_upstream_* family.
import {
  addressRecord,
  cnameRecord,
  type DnsForwarder,
  type DnsHandler,
  type DnsMessage,
  type DnsRecord,
  type DnsRequest,
  type Nameserver,
  RecordType,
  type ResolvConf,
  ResponseCode,
  recordTypeName,
  replyTo,
} from "@ambient/dns";
import type { Workload } from "@ambient/xds";
import { MESH_RECORD_TTL, type MeshNameSource, resolveMeshName } from "./dns-names.js";
import type { Histogram, Logger, MetricsSink } from "./telemetry.js";

/** The DNS port inside each pod (Istio's ztunnel `DNS_PROXY_ADDR`). */
export const DNS_PROXY_PORT = 15053;

const LABELS = [
  "request_query_type",
  "request_protocol",
  "source_canonical_service",
  "source_canonical_revision",
] as const;

/** Upstream durations from 1 ms to 5 s (seconds). */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.1, 1, 5];

const IN_CLASS = 1;

/**
 * The `request_query_type` label: the type's name for the types resolvers ask for, `other` for the
 * rest, so a pod asking for random types cannot grow the metrics without bound.
 */
const LABELLED_TYPES = new Set(["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "ANY"]);
function queryTypeLabel(type: number): string {
  const name = recordTypeName(type);
  return LABELLED_TYPES.has(name) ? name.toLowerCase() : "other";
}

/** Where and how the proxy forwards: the nameservers, how long one try waits, how many rounds. */
export interface UpstreamPlan {
  readonly nameservers: readonly Nameserver[];
  /** One try's wait: `dns.timeoutMs`, else resolv.conf `timeout:` (seconds), else 5 s. */
  readonly timeoutMs: number;
  /** Rounds over `nameservers`: resolv.conf `attempts:`, else 2. */
  readonly attempts: number;
}

/** The C library's RES_TIMEOUT and RES_DFLRETRY; Istio's ztunnel gets the same from resolv.conf. */
const DEFAULT_TRY_SECONDS = 5;
const DEFAULT_ROUNDS = 2;

/**
 * The forwarding plan from the configured nameservers, else resolv.conf's (`conf`; undefined when
 * it could not be read; 127.0.0.1 when it lists none, as the C library does). `timeout:0` still
 * waits a second, as the C library does; `attempts:0` still asks once (the C library would not ask
 * at all, which only turns every forward into SERVFAIL).
 */
export function upstreamPlan(
  conf: ResolvConf | undefined,
  configured: { nameservers?: readonly Nameserver[]; timeoutMs?: number } = {},
): UpstreamPlan {
  const listed = conf?.nameservers ?? [];
  const nameservers =
    configured.nameservers ??
    (listed.length > 0 ? listed : ["127.0.0.1"]).map((address) => ({ address, port: 53 }));
  const trySeconds = Math.max(1, conf?.timeoutSeconds ?? DEFAULT_TRY_SECONDS);
  return {
    nameservers,
    timeoutMs: configured.timeoutMs ?? trySeconds * 1000,
    attempts: Math.max(1, conf?.attempts ?? DEFAULT_ROUNDS),
  };
}

export interface DnsProxyOptions {
  store: MeshNameSource;
  /** Where names the mesh does not have are sent, unless a pod's handler has its own forwarder. */
  forwarder: DnsForwarder;
  /** Kubernetes cluster domain. Default `cluster.local`. */
  clusterDomain?: string;
  /**
   * Whether mesh names get IPv6 records. Default true; false answers AAAA for a mesh name with no
   * records (NOERROR), as Istio's ztunnel with `IPV6_ENABLED=false`. Forwarded names are untouched.
   */
  ipv6?: boolean;
  logger: Logger;
  metrics: MetricsSink;
}

export interface DnsProxy {
  /**
   * The request handler of one pod's DNS listeners. Names the mesh does not have go to `forwarder`
   * when one is given (the pod's own, whose sockets leave from the pod's namespace; its owner closes
   * it), else to the proxy's.
   */
  handlerFor(client: Workload, forwarder?: DnsForwarder): DnsHandler;
  /** Stops the proxy's own forwarder (in-flight forwards fail with SERVFAIL). */
  close(): void;
}

/** Fisher-Yates on a copy: each answer lists a Service's addresses in a new order, as a resolver may. */
function shuffled(list: readonly string[]): string[] {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as string, out[i] as string];
  }
  return out;
}

export function createDnsProxy(options: DnsProxyOptions): DnsProxy {
  const { store, logger, metrics } = options;
  const clusterDomain = options.clusterDomain ?? "cluster.local";
  const requests = metrics.counter("istio_dns_requests_total", "DNS requests received", LABELS);
  const upstreamRequests = metrics.counter(
    "istio_dns_upstream_requests_total",
    "DNS requests forwarded to the upstream resolver",
    LABELS,
  );
  const upstreamFailures = metrics.counter(
    "istio_dns_upstream_failures_total",
    "DNS requests the upstream resolver did not answer",
    LABELS,
  );
  const upstreamDuration: Histogram = metrics.histogram(
    "istio_dns_upstream_request_duration_seconds",
    "Time the upstream resolver took to answer, in seconds",
    LABELS,
    DURATION_BUCKETS,
  );

  const forward = async (
    forwarder: DnsForwarder,
    request: DnsRequest,
    labels: Record<(typeof LABELS)[number], string>,
    client: Workload,
  ): Promise<DnsMessage | Uint8Array> => {
    upstreamRequests.inc(labels);
    const started = performance.now();
    try {
      return await forwarder.forward(request.bytes, { protocol: request.protocol });
    } catch (err) {
      upstreamFailures.inc(labels);
      const question = request.message.questions[0];
      logger.debug(
        {
          src: `${client.namespace}/${client.name}`,
          query: labels.request_query_type,
          name: question?.name,
          err: (err as Error).message,
        },
        "dns forward failed",
      );
      return replyTo(request.message, { rcode: ResponseCode.SERVFAIL });
    } finally {
      upstreamDuration.observe(labels, (performance.now() - started) / 1000);
    }
  };

  const handlerFor = (client: Workload, forwarder = options.forwarder): DnsHandler => {
    const source = { namespace: client.namespace, network: client.network };
    return (request) => {
      const message = request.message;
      const question = message.questions[0];
      const type = question?.type ?? 0;
      const labels = {
        request_query_type: queryTypeLabel(type),
        request_protocol: request.protocol,
        source_canonical_service: client.canonicalName === "" ? "unknown" : client.canonicalName,
        source_canonical_revision: client.canonicalRevision === "" ? "unknown" : client.canonicalRevision,
      };
      requests.inc(labels);
      // Only address questions about the Internet class are the mesh's to answer.
      if (
        question === undefined ||
        question.class !== IN_CLASS ||
        (type !== RecordType.A && type !== RecordType.AAAA)
      ) {
        return forward(forwarder, request, labels, client);
      }
      const answer = resolveMeshName(
        store,
        source,
        question.name,
        type === RecordType.A ? 4 : 6,
        clusterDomain,
      );
      if (answer.kind === "forward") return forward(forwarder, request, labels, client);
      if (type === RecordType.AAAA && options.ipv6 === false) answer.addresses = [];
      const records: DnsRecord[] = [];
      let owner = question.name;
      // A name found without its search domain gets a CNAME to that name only when there are
      // addresses to follow it; with none of the family asked the answer is empty (NOERROR), as a
      // CNAME alone would send the client's resolver to chase a name it will not get an address for.
      if (answer.canonicalName !== undefined && answer.addresses.length > 0) {
        records.push(cnameRecord(question.name, answer.canonicalName, MESH_RECORD_TTL));
        owner = answer.canonicalName;
      }
      for (const ip of shuffled(answer.addresses)) records.push(addressRecord(owner, ip, MESH_RECORD_TTL));
      logger.debug(
        {
          src: `${client.namespace}/${client.name}`,
          query: labels.request_query_type,
          name: question.name,
          service: answer.service,
          answers: answer.addresses.length,
        },
        "dns answered",
      );
      return replyTo(message, { authoritative: true, answers: records });
    };
  };

  return { handlerFor, close: () => options.forwarder.close() };
}
