import type { Socket } from "node:net";
import {
  ChannelCredentials,
  type ChannelOptions,
  Client,
  connectivityState,
  Metadata,
  status,
} from "@grpc/grpc-js";
import { spiffeIdOfParsed } from "./certificate-identity.js";
import {
  type CertificateRequestMessage,
  type CertificateResponseMessage,
  CREATE_CERTIFICATE_PATH,
  decodeResponse,
  encodeRequest,
  IMPERSONATED_IDENTITY_KEY,
} from "./certificate-service-proto.js";
import { SpiffeError } from "./errors.js";
import { destroyAll, recordingSockets } from "./grpc-connections.js";
import { fromGrpcError } from "./node-error.js";
import { invalidOption, msOption, optionsObject } from "./options.js";
import type { SpiffeId } from "./spiffe-id.js";
import { parseChain } from "./verify-svid.js";

/** Options of {@link createCertificateServiceClient}. */
export interface CertificateServiceClientOptions {
  /** gRPC target, e.g. `istiod.istio-system.svc:15012`; ztunnel `CA_ADDRESS`. */
  address: string;
  /** Channel credentials (TLS, optionally with a client certificate). */
  credentials: ChannelCredentials;
  /** Bearer token sent as `authorization: Bearer ...`, or a function that reads a fresh one per call. */
  token?: string | (() => string | Promise<string>);
  /** Sent as `clusterid` metadata; Istio `CLUSTER_ID`. Default: not sent. */
  clusterId?: string;
  /**
   * Per-call deadline in ms, the connection included: above 0 and at most 2^31-1. Default 10 s. A call that misses it while the channel
   * is still connecting also drops the channel, and the next call makes a new one: grpc-js waits on a
   * connection attempt for as long as it lasts (the kernel's SYN retries, about two minutes, or for
   * good when the peer accepted and never answers), and every call until then would miss its deadline.
   */
  timeoutMs?: number;
  channelOptions?: ChannelOptions;
}

/** Options of one {@link CertificateServiceClient.createCertificate} call. */
export interface CreateCertificateOptions {
  /** Requested lifetime in seconds; 0 lets the CA choose. Default 0. */
  validitySeconds?: number;
  /**
   * Ask for this identity on behalf of a workload (node agent mode). The answer's leaf must carry it.
   */
  impersonatedIdentity?: SpiffeId | string;
}

/** Client of `istio.v1.auth.IstioCertificateService`. */
export interface CertificateServiceClient {
  /**
   * Sends a CSR and returns the chain (one PEM per element, leaf first, root last).
   * @throws SpiffeError `ERR_UNAUTHENTICATED`, `ERR_PERMISSION_DENIED`, `ERR_CA_SIGN_REFUSED`,
   *   `ERR_CA_UNAVAILABLE`, `ERR_CA_RESPONSE_INVALID`; `ERR_CLOSED` after `close()`.
   */
  createCertificate(csrPem: string, options?: CreateCertificateOptions): Promise<string[]>;
  close(): void;
}

/** How long `close()` leaves the client's connections to close themselves before ending them. */
const CLOSE_GRACE_MS = 1000;

/**
 * Creates a client for the CA's certificate service.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` when `address` is not a non-empty string, `credentials` are
 *   not grpc-js `ChannelCredentials` or `timeoutMs` is out of range; `ERR_CA_CONFIG_INVALID` when grpc-js refuses the address or credentials.
 */
export function createCertificateServiceClient(
  clientOptions: CertificateServiceClientOptions,
): CertificateServiceClient {
  const options = optionsObject("createCertificateServiceClient", clientOptions);
  if (typeof options.address !== "string" || options.address.length === 0) {
    throw invalidOption("createCertificateServiceClient", "address", "a non-empty string", options.address);
  }
  if (!(options.credentials instanceof ChannelCredentials)) {
    throw invalidOption(
      "createCertificateServiceClient",
      "credentials",
      "@grpc/grpc-js ChannelCredentials (grpcChannelCredentials(...).credentials or credentials.createSsl(...))",
      options.credentials,
    );
  }
  const timeoutMs = msOption("createCertificateServiceClient", "timeoutMs", options.timeoutMs, 10_000, {
    above: 0,
  });
  const address = options.address;
  let closed = false;
  let sockets = new Set<Socket>();
  const makeClient = (): Client => {
    sockets = new Set();
    // A channel of its own: grpc-js otherwise shares connections between channels with the same
    // target and options, and a new channel would wait on the attempt the last one gave up on.
    return new Client(address, recordingSockets(options.credentials, sockets), {
      ...options.channelOptions,
      "grpc.use_local_subchannel_pool": 1,
    });
  };
  let client: Client;
  try {
    client = makeClient();
  } catch (cause) {
    throw new SpiffeError("ERR_CA_CONFIG_INVALID", `cannot create a client for ${JSON.stringify(address)}`, {
      cause,
    });
  }
  /** After a call on `used` missed its deadline: a channel that is still not connected is made anew. */
  const renewIfConnecting = (used: Client) => {
    if (used !== client) return;
    if (used.getChannel().getConnectivityState(false) === connectivityState.READY) return;
    used.close();
    destroyAll(sockets);
    client = makeClient();
  };
  return {
    async createCertificate(csrPem, callOptions = {}) {
      if (closed) throw new SpiffeError("ERR_CLOSED", "certificate service client is closed");
      const metadata = new Metadata();
      const token = typeof options.token === "function" ? await options.token() : options.token;
      if (token) metadata.set("authorization", `Bearer ${token}`);
      if (options.clusterId) metadata.set("clusterid", options.clusterId);
      const impersonated = callOptions.impersonatedIdentity?.toString();
      const request: CertificateRequestMessage = {
        csr: csrPem,
        validityDuration: Math.max(0, Math.floor(callOptions.validitySeconds ?? 0)),
        metadata: impersonated ? { [IMPERSONATED_IDENTITY_KEY]: impersonated } : {},
      };
      // close() may have run while the token was read.
      if (closed) throw new SpiffeError("ERR_CLOSED", "certificate service client is closed");
      const used = client;
      const response = await new Promise<CertificateResponseMessage>((resolve, reject) => {
        used.makeUnaryRequest<CertificateRequestMessage, CertificateResponseMessage>(
          CREATE_CERTIFICATE_PATH,
          encodeRequest,
          decodeResponse,
          request,
          metadata,
          { deadline: Date.now() + timeoutMs },
          (err, value) => {
            if (err?.code === status.DEADLINE_EXCEEDED) renewIfConnecting(used);
            if (err || !value)
              reject(fromGrpcError(err ?? new Error("empty response"), "CreateCertificate failed"));
            else resolve(value);
          },
        );
      });
      if (response.certChain.length === 0) {
        throw new SpiffeError("ERR_CA_RESPONSE_INVALID", "CA answered with an empty certificate chain");
      }
      let leafId: SpiffeId;
      try {
        const first = parseChain([response.certChain[0] as string])[0];
        leafId = spiffeIdOfParsed(first as NonNullable<typeof first>);
        parseChain(response.certChain);
      } catch (cause) {
        throw new SpiffeError(
          "ERR_CA_RESPONSE_INVALID",
          `CA answered with an unusable chain: ${(cause as Error).message}`,
          {
            cause,
          },
        );
      }
      if (impersonated && leafId.toString() !== impersonated) {
        throw new SpiffeError(
          "ERR_CA_RESPONSE_INVALID",
          `CA issued a certificate for ${leafId} but ${impersonated} was requested`,
        );
      }
      return response.certChain;
    },
    close() {
      closed = true;
      client.close();
      // grpc-js closes connections gracefully but cannot stop one it is still making.
      const left = sockets;
      if (left.size > 0) setTimeout(() => destroyAll(left), CLOSE_GRACE_MS).unref();
    },
  };
}
