import { type ChannelCredentials, type ChannelOptions, Client, Metadata } from "@grpc/grpc-js";
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
import { fromGrpcError } from "./node-error.js";
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
  /** Per-call deadline. Default 10 s. */
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
   *   `ERR_CA_UNAVAILABLE`, `ERR_CA_RESPONSE_INVALID`.
   */
  createCertificate(csrPem: string, options?: CreateCertificateOptions): Promise<string[]>;
  close(): void;
}

/** Creates a client for the CA's certificate service. */
export function createCertificateServiceClient(
  options: CertificateServiceClientOptions,
): CertificateServiceClient {
  let client: Client;
  try {
    client = new Client(options.address, options.credentials, options.channelOptions);
  } catch (cause) {
    throw new SpiffeError(
      "ERR_CA_CONFIG_INVALID",
      `cannot create a client for ${JSON.stringify(options.address)}`,
      {
        cause,
      },
    );
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  return {
    async createCertificate(csrPem, callOptions = {}) {
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
      const response = await new Promise<CertificateResponseMessage>((resolve, reject) => {
        client.makeUnaryRequest<CertificateRequestMessage, CertificateResponseMessage>(
          CREATE_CERTIFICATE_PATH,
          encodeRequest,
          decodeResponse,
          request,
          metadata,
          { deadline: Date.now() + timeoutMs },
          (err, value) => {
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
      client.close();
    },
  };
}
