/**
 * SPIFFE identities, X.509-SVIDs, trust bundles and a mesh certificate authority for Istio ambient.
 *
 * @example
 * ```ts
 * import { createCertificateAuthority, SpiffeId, verifySvid } from "@ambient/spiffe";
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
  type SignedCertificate,
  type SignOptions,
  startRootRotator,
} from "./certificate-authority.js";
export { type CertificateInput, peerSpiffeId, spiffeIdFromCertificate } from "./certificate-identity.js";
export {
  type CertificateServerOptions,
  type CertificateService,
  type CertificateServiceOptions,
  createCertificateService,
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
export { SpiffeError, type SpiffeErrorCode, type SpiffeErrorDetails } from "./errors.js";
export { type GenerateKeyPairOptions, generateKeyPair, type KeyAlgorithm, type KeyPair } from "./key-pair.js";
export {
  createNodeAuthorizer,
  type ImpersonationRequest,
  type NodeAuthorizer,
  type NodeAuthorizerOptions,
} from "./node-authorizer.js";
export {
  type CertificateRequester,
  SecretManager,
  type SecretManagerOptions,
  type SecretManagerTimers,
  type SvidFetchFailedEvent,
  type SvidRotatedEvent,
} from "./secret-manager.js";
export {
  type IstioIdentity,
  MAX_SPIFFE_ID_BYTES,
  MAX_TRUST_DOMAIN_BYTES,
  parseTrustDomain,
  SpiffeId,
} from "./spiffe-id.js";
export type { Counter, Gauge, Histogram, Logger, MetricLabels, MetricsSink } from "./telemetry.js";
export { noopLogger, noopMetrics } from "./telemetry.js";
export {
  type GrpcChannelSpiffeOptions,
  grpcChannelCredentials,
  type SpiffeIdAuthorizer,
  type SpiffeTlsClientOptions,
  type SpiffeTlsServerOptions,
  serverIdentityCheck,
  type TlsClientSpiffeOptions,
  type TlsServerSpiffeOptions,
  tlsClientOptions,
  tlsServerOptions,
} from "./tls-options.js";
export { TrustBundle } from "./trust-bundle.js";
export { type CertificateChainInput, type VerifySvidOptions, verifySvid } from "./verify-svid.js";
export { type X509Svid, x509SvidFromChain } from "./x509-svid.js";
