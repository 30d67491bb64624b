import type { PeerCertificate } from "node:tls";
import type { Metadata } from "@grpc/grpc-js";
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey, jwtVerify } from "jose";
import { spiffeIdFromCertificate } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import { parseTrustDomain, SpiffeId } from "./spiffe-id.js";

/** What an authenticator sees of an incoming certificate request. */
export interface AuthenticationContext {
  /** gRPC request metadata (headers). */
  metadata: Metadata;
  /** The client certificate, present only when the TLS handshake verified it. */
  peerCertificate?: PeerCertificate;
}

/** An authenticated caller of the certificate service. */
export interface Caller {
  /** The caller's own identity; the certificate is for it unless impersonation is allowed. */
  identity: SpiffeId;
  /** Name of the authenticator that accepted the caller. */
  authenticator: string;
  /** Kubernetes node the caller runs on, when the credential says so (bound service-account token). */
  node?: string;
  /** Pod the credential is bound to, when known. */
  pod?: { name: string; uid?: string };
}

/**
 * Authenticates callers from one kind of credential. Returns `undefined` when the request carries
 * no credential of this kind, and throws `ERR_UNAUTHENTICATED` when it carries a bad one.
 */
export interface Authenticator {
  readonly name: string;
  authenticate(context: AuthenticationContext): Promise<Caller | undefined>;
}

/**
 * Authenticates callers by their verified mTLS client certificate; the identity is its one
 * SPIFFE URI SAN. Istio equivalent: `ClientCertAuthenticator`.
 */
export function createClientCertificateAuthenticator(): Authenticator {
  return {
    name: "client-certificate",
    async authenticate(context) {
      const cert = context.peerCertificate;
      if (!cert?.raw) return undefined;
      try {
        return { identity: spiffeIdFromCertificate(cert), authenticator: "client-certificate" };
      } catch (cause) {
        throw new SpiffeError(
          "ERR_UNAUTHENTICATED",
          `client certificate carries no usable SPIFFE ID: ${(cause as Error).message}`,
          {
            cause,
          },
        );
      }
    },
  };
}

// The JWT types below are written out rather than taken from jose: jose's declarations are ESM-only, so a
// CommonJS consumer compiling our .d.cts with `module: node16` would fail on them (TS1479). jose's own
// values (a JSONWebKeySet, createRemoteJWKSet's resolver, JWTPayload) fit these shapes.

/** A JSON Web Key Set (RFC 7517, section 5), such as jose's `JSONWebKeySet`. */
export interface JwtKeySet {
  keys: ReadonlyArray<{ readonly [parameter: string]: unknown }>;
}

/** The protected header of a JWS, as a key resolver receives it. */
export interface JwtProtectedHeader {
  alg?: string;
  kid?: string;
  [parameter: string]: unknown;
}

/** The parts of a JWS, as a key resolver receives them. */
export interface JwtTokenParts {
  payload: string | Uint8Array;
  signature: string;
  protected?: string;
  header?: JwtProtectedHeader;
}

/** Resolves the verification key of a token, such as jose's `createRemoteJWKSet(url)`. */
export type JwtKeyResolver = (protectedHeader: JwtProtectedHeader, token: JwtTokenParts) => unknown;

/** Verified JWT claims (RFC 7519), such as jose's `JWTPayload`. */
export interface JwtClaims {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  exp?: number;
  nbf?: number;
  iat?: number;
  jti?: string;
  [claim: string]: unknown;
}

/** Options of {@link createJwtAuthenticator}. */
export interface JwtAuthenticatorOptions {
  /** Verification keys: a JWKS, or a jose key resolver (e.g. `createRemoteJWKSet`). */
  keys: JwtKeySet | JwtKeyResolver;
  /** Accepted issuer(s). Default: any issuer. Istio `TOKEN_ISSUER`. */
  issuer?: string | string[];
  /** Accepted audiences; the token must name one. Default `["istio-ca"]`; Istio `TOKEN_AUDIENCES`. */
  audiences?: string[];
  /** Trust domain of the identities built from tokens. Default `cluster.local`. */
  trustDomain?: string;
  /** Tolerated clock skew for `exp`/`nbf`. Default 0 s. */
  clockToleranceSeconds?: number;
  /** Accepted signature algorithms. Default `["RS256", "ES256"]`. */
  algorithms?: string[];
  /**
   * Maps verified claims to a caller. Default: Kubernetes service-account tokens, where `sub` is
   * `system:serviceaccount:<ns>:<sa>` and the `kubernetes.io` claim carries the pod and node binding.
   */
  callerFromClaims?: (claims: JwtClaims, trustDomain: string) => Omit<Caller, "authenticator">;
}

interface KubernetesClaim {
  namespace?: string;
  serviceaccount?: { name?: string };
  pod?: { name?: string; uid?: string };
  node?: { name?: string };
}

/** The caller described by a Kubernetes service-account token. */
export function callerFromKubernetesClaims(
  claims: JwtClaims,
  trustDomain: string,
): Omit<Caller, "authenticator"> {
  const sub = typeof claims.sub === "string" ? claims.sub : "";
  const parts = sub.split(":");
  if (parts.length !== 4 || parts[0] !== "system" || parts[1] !== "serviceaccount") {
    throw new SpiffeError(
      "ERR_UNAUTHENTICATED",
      `token subject ${JSON.stringify(sub)} is not system:serviceaccount:<namespace>:<name>`,
    );
  }
  const identity = SpiffeId.fromIstio({
    trustDomain,
    namespace: parts[2] as string,
    serviceAccount: parts[3] as string,
  });
  const k8s = (claims["kubernetes.io"] ?? {}) as KubernetesClaim;
  const caller: Omit<Caller, "authenticator"> = { identity };
  if (typeof k8s.node?.name === "string") caller.node = k8s.node.name;
  if (typeof k8s.pod?.name === "string") {
    caller.pod = { name: k8s.pod.name, ...(typeof k8s.pod.uid === "string" ? { uid: k8s.pod.uid } : {}) };
  }
  return caller;
}

function bearerToken(metadata: Metadata): string | undefined {
  const values = metadata.get("authorization");
  for (const v of values) {
    const text = typeof v === "string" ? v : v.toString("utf8");
    const m = /^Bearer\s+(\S+)$/i.exec(text.trim());
    if (m) return m[1];
  }
  return undefined;
}

/**
 * Authenticates callers by an `authorization: Bearer <JWT>` header verified with `jose` against
 * configured keys, audience and issuer. Istio equivalent: the Kubernetes JWT authenticator (which
 * uses TokenReview; here the keys are configured directly).
 */
export function createJwtAuthenticator(options: JwtAuthenticatorOptions): Authenticator {
  const trustDomain = parseTrustDomain(options.trustDomain ?? "cluster.local");
  const audiences = options.audiences ?? ["istio-ca"];
  const getKey =
    typeof options.keys === "function"
      ? (options.keys as JWTVerifyGetKey)
      : createLocalJWKSet(options.keys as unknown as JSONWebKeySet);
  const toCaller = options.callerFromClaims ?? callerFromKubernetesClaims;
  return {
    name: "jwt",
    async authenticate(context) {
      const token = bearerToken(context.metadata);
      if (token === undefined) return undefined;
      let payload: JwtClaims;
      try {
        ({ payload } = await jwtVerify(token, getKey, {
          audience: audiences,
          ...(options.issuer === undefined ? {} : { issuer: options.issuer }),
          clockTolerance: options.clockToleranceSeconds ?? 0,
          algorithms: options.algorithms ?? ["RS256", "ES256"],
          // A bearer token without an expiry would be good forever to whoever copied it: refused, as
          // Kubernetes' bound service-account tokens always carry one.
          requiredClaims: ["exp"],
        }));
      } catch (cause) {
        const reason = cause instanceof Error ? cause.message : String(cause);
        const joseCode = (cause as { code?: unknown }).code;
        throw new SpiffeError("ERR_UNAUTHENTICATED", `bearer token rejected: ${reason}`, { cause, joseCode });
      }
      return { ...toCaller(payload, trustDomain), authenticator: "jwt" };
    },
  };
}
