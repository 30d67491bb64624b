/**
 * `@ambient/spiffe/ca`: the mesh certificate authority, CSRs, Istio's CA protocol over gRPC (service,
 * client, caller authentication) and the workload-side `SecretManager`. Needs the optional peer
 * dependencies `@grpc/grpc-js`, `@peculiar/x509`, `reflect-metadata`, `jose` and `protobufjs`; the
 * X.509 library installs a global `Reflect` metadata polyfill when this entry point is loaded.
 *
 * @example
 * ```ts
 * import { SpiffeId, verifySvid } from "@ambient/spiffe";
 * import { createCertificateAuthority } from "@ambient/spiffe/ca";
 * const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
 * const id = SpiffeId.fromIstio({ trustDomain: "cluster.local", namespace: "default", serviceAccount: "web" });
 * const svid = await ca.issue({ spiffeId: id }); // ECDSA P-256 key, 24 h certificate
 * verifySvid(svid.certChainPem, ca.trustBundle()).toString(); // "spiffe://cluster.local/ns/default/sa/web"
 * ```
 *
 * @packageDocumentation
 */

export {
  type AuthenticationContext,
  type Authenticator,
  type Caller,
  callerFromKubernetesClaims,
  createClientCertificateAuthenticator,
  createJwtAuthenticator,
  type JwtAuthenticatorOptions,
  type JwtClaims,
  type JwtKeyResolver,
  type JwtKeySet,
  type JwtProtectedHeader,
  type JwtTokenParts,
} from "./authenticator.js";
export {
  type CaCertsPem,
  type CertificateAuthority,
  type CertificateAuthorityOptions,
  createCertificateAuthority,
  type IssueOptions,
  loadCaCertsDirectory,
  type RootRotator,
  type RootRotatorOptions,
  type RootRotatorTimers,
  type RotateRootOptions,
  type SignedCertificate,
  type SignOptions,
  startRootRotator,
} from "./certificate-authority.js";
export {
  AUTHENTICATION_FAILURE,
  type CertificateServerOptions,
  type CertificateService,
  type CertificateServiceOptions,
  createCertificateService,
  IMPERSONATION_FAILURE,
  type RunningCertificateServer,
  startCertificateServer,
} from "./certificate-service.js";
export {
  type CertificateServiceClient,
  type CertificateServiceClientOptions,
  type CreateCertificateOptions,
  createCertificateServiceClient,
} from "./certificate-service-client.js";
export { IMPERSONATED_IDENTITY_KEY } from "./certificate-service-proto.js";
export { type CreateCsrOptions, createCsr } from "./csr.js";
export {
  createNodeAuthorizer,
  type ImpersonationRequest,
  type NodeAuthorizer,
  type NodeAuthorizerOptions,
} from "./node-authorizer.js";
export {
  type CertificateRequester,
  MIN_TTL_SECONDS,
  SecretManager,
  type SecretManagerOptions,
  type SecretManagerTimers,
  type SvidFetchFailedEvent,
  type SvidRotatedEvent,
} from "./secret-manager.js";
