import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Authenticator, Caller } from "./authenticator.js";
import type { CertificateAuthority } from "./certificate-authority.js";
import {
  type CertificateRequestMessage,
  type CertificateResponseMessage,
  certificateServiceDefinition,
  IMPERSONATED_IDENTITY_KEY,
} from "./certificate-service-proto.js";
import { SpiffeError } from "./errors.js";
import type { NodeAuthorizer } from "./node-authorizer.js";
import { toGrpcStatus } from "./node-error.js";
import { invalidOption } from "./options.js";
import { SpiffeId } from "./spiffe-id.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";

/** Options of {@link createCertificateService}. */
export interface CertificateServiceOptions {
  /** The CA that signs. */
  ca: Pick<CertificateAuthority, "sign">;
  /** Tried in order; the first that recognises a credential decides. Istio: client cert, then JWT. */
  authenticators: readonly Authenticator[];
  /**
   * Required for impersonation; without it every request that carries an impersonated identity is
   * refused, even one naming the caller's own identity (as istiod without `CA_TRUSTED_NODE_ACCOUNTS`).
   */
  nodeAuthorizer?: NodeAuthorizer;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** A grpc-js service definition and implementation, for `server.addService(definition, implementation)`. */
export interface CertificateService {
  definition: typeof certificateServiceDefinition;
  implementation: UntypedServiceImplementation;
}

/** What a caller that fails authentication is told (`UNAUTHENTICATED`), whatever the reason: istiod's words. */
export const AUTHENTICATION_FAILURE = "request authenticate failure";
/** What an authenticated caller that may not act for the identity it asks for is told (`UNAUTHENTICATED`). */
export const IMPERSONATION_FAILURE = "request impersonation authentication failure";

/**
 * The `istio.v1.auth.IstioCertificateService/CreateCertificate` handler: authenticates the caller,
 * decides the identity (the caller's own, or an impersonated one a node authorizer allows), signs
 * the CSR's key for that identity (whatever SAN the CSR asks for) and answers with one PEM per
 * element, leaf first, root last.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` when `ca`, `authenticators` or `nodeAuthorizer` is missing
 *   or of the wrong type.
 */
export function createCertificateService(options: CertificateServiceOptions): CertificateService {
  checkServiceOptions("createCertificateService", options);
  const logger = options.logger ?? noopLogger;
  const metrics = options.metrics ?? noopMetrics;
  const requests = metrics.counter("citadel_server_csr_count", "Certificate signing requests received");
  const authFailures = metrics.counter(
    "citadel_server_authentication_failure_count",
    "Certificate requests whose caller could not be authenticated",
  );

  async function authenticate(
    call: ServerUnaryCall<CertificateRequestMessage, CertificateResponseMessage>,
  ): Promise<Caller> {
    const peerCertificate = call.getAuthContext?.()?.sslPeerCertificate;
    const context = { metadata: call.metadata, ...(peerCertificate ? { peerCertificate } : {}) };
    const problems: string[] = [];
    for (const authenticator of options.authenticators) {
      try {
        const caller = await authenticator.authenticate(context);
        if (caller) return caller;
      } catch (err) {
        problems.push(`${authenticator.name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    // The caller learns that it is refused, not why (which check its token failed would tell it how to
    // adjust the next try); the reason is for the operator's log, with the caller's address.
    logger.error(
      { peer: call.getPeer(), reason: problems.length > 0 ? problems.join("; ") : "no credential presented" },
      "certificate request: caller not authenticated",
    );
    throw new SpiffeError("ERR_UNAUTHENTICATED", AUTHENTICATION_FAILURE, { logged: true });
  }

  async function handle(
    call: ServerUnaryCall<CertificateRequestMessage, CertificateResponseMessage>,
  ): Promise<CertificateResponseMessage> {
    requests.inc();
    let caller: Caller;
    try {
      caller = await authenticate(call);
    } catch (err) {
      authFailures.inc();
      throw err;
    }
    const request = call.request;
    let identity = caller.identity;
    const impersonated = request.metadata[IMPERSONATED_IDENTITY_KEY];
    // As istiod: any impersonated identity, the caller's own included, needs the node authorizer's
    // consent. A workload asks for its own identity by sending none.
    if (typeof impersonated === "string" && impersonated !== "") {
      const requested = SpiffeId.tryParse(impersonated);
      const allowed =
        requested !== undefined &&
        options.nodeAuthorizer !== undefined &&
        (await options.nodeAuthorizer.authorize({ caller, requested }));
      if (!allowed || requested === undefined) {
        authFailures.inc();
        logger.warn(
          { peer: call.getPeer(), caller: caller.identity.toString(), requested: impersonated },
          "certificate request: impersonation refused",
        );
        throw new SpiffeError("ERR_UNAUTHENTICATED", IMPERSONATION_FAILURE, { logged: true });
      }
      identity = requested;
    }
    // The identity was decided above from the authenticated caller; the CSR only proves possession of
    // its key. Its SANs are not read: a node agent may send a stale one (an old trust domain) or a
    // placeholder, and the certificate names the decided identity alone either way.
    const signed = await options.ca.sign(request.csr, {
      spiffeId: identity,
      // As istiod: a validity_duration of 0 or below on the wire asks for the CA's default lifetime.
      ttlSeconds: request.validityDuration > 0 ? request.validityDuration : 0,
      ignoreCsrSans: true,
    });
    logger.debug({ identity: identity.toString(), caller: caller.identity.toString() }, "certificate issued");
    return { certChain: signed.certChain };
  }

  const implementation: UntypedServiceImplementation = {
    CreateCertificate(
      call: ServerUnaryCall<CertificateRequestMessage, CertificateResponseMessage>,
      callback: sendUnaryData<CertificateResponseMessage>,
    ) {
      handle(call).then(
        (response) => callback(null, response),
        (err: unknown) => {
          const { code, details } = toGrpcStatus(err);
          if (!(err instanceof SpiffeError && err.details.logged === true)) {
            logger.warn({ err, code }, "certificate request refused");
          }
          callback({ code, details, name: "SpiffeError", message: details });
        },
      );
    },
  };
  return { definition: certificateServiceDefinition, implementation };
}

/**
 * Refuses a service that could only fail every call: without a CA or authenticators each request
 * would end as an internal error, found only by the callers.
 * @throws SpiffeError `ERR_OPTIONS_INVALID`
 */
function checkServiceOptions(scope: string, options: CertificateServiceOptions): void {
  if (typeof options !== "object" || options === null) {
    throw invalidOption(scope, "argument", "an options object", options);
  }
  const ca = options.ca as { sign?: unknown } | null | undefined;
  if (typeof ca !== "object" || ca === null || typeof ca.sign !== "function") {
    throw invalidOption(scope, "ca", "a CertificateAuthority (an object with a sign method)", options.ca);
  }
  const authenticators = options.authenticators as unknown;
  if (
    !Array.isArray(authenticators) ||
    !authenticators.every(
      (a: { authenticate?: unknown } | null) =>
        typeof a === "object" && a !== null && typeof a.authenticate === "function",
    )
  ) {
    throw invalidOption(
      scope,
      "authenticators",
      "an array of authenticators (objects with an authenticate method)",
      options.authenticators,
    );
  }
  const nodeAuthorizer = options.nodeAuthorizer as { authorize?: unknown } | null | undefined;
  if (
    nodeAuthorizer !== undefined &&
    (typeof nodeAuthorizer !== "object" ||
      nodeAuthorizer === null ||
      typeof nodeAuthorizer.authorize !== "function")
  ) {
    throw invalidOption(
      scope,
      "nodeAuthorizer",
      "a NodeAuthorizer (an object with an authorize method)",
      nodeAuthorizer,
    );
  }
}

/** Options of {@link startCertificateServer}. */
export interface CertificateServerOptions extends CertificateServiceOptions {
  /** Listen address. Default `127.0.0.1:0` (ephemeral port); istiod serves the CA on `:15012`. */
  address?: string;
  /** Server TLS credentials; use `ServerCredentials.createSsl(..., checkClientCertificate)` for mTLS callers. */
  credentials: ServerCredentials;
}

/** A running certificate server. */
export interface RunningCertificateServer {
  readonly port: number;
  readonly server: Server;
  /** Stops accepting calls and waits for running ones. */
  close(): Promise<void>;
}

/**
 * Starts a gRPC server that serves only the certificate service.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` for the options {@link createCertificateService} refuses and
 *   for `credentials` that are not grpc-js `ServerCredentials`; `ERR_CA_CONFIG_INVALID` when it cannot listen.
 */
export async function startCertificateServer(
  options: CertificateServerOptions,
): Promise<RunningCertificateServer> {
  checkServiceOptions("startCertificateServer", options);
  if (!(options.credentials instanceof ServerCredentials)) {
    throw invalidOption(
      "startCertificateServer",
      "credentials",
      "@grpc/grpc-js ServerCredentials (ServerCredentials.createSsl(...) for TLS)",
      options.credentials,
    );
  }
  const server = new Server();
  const service = createCertificateService(options);
  server.addService(service.definition, service.implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.address ?? "127.0.0.1:0", options.credentials, (err, p) => {
      if (err) {
        // Nothing may stay half-open when the listen fails.
        server.forceShutdown();
        reject(new SpiffeError("ERR_CA_CONFIG_INVALID", `cannot listen: ${err.message}`, { cause: err }));
      } else resolve(p);
    });
  });
  return {
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
      }),
  };
}
