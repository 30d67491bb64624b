/**
 * SPIFFE identities, X.509-SVIDs, trust bundles and TLS options for Istio ambient. This entry point loads
 * only Node's own modules: the certificate authority and Istio's CA protocol are in `@ambient/spiffe/ca`,
 * gRPC channel credentials in `@ambient/spiffe/grpc`.
 *
 * @example
 * ```ts
 * import { SpiffeId, TrustBundle, verifySvid } from "@ambient/spiffe";
 * const id = SpiffeId.fromIstio({ trustDomain: "cluster.local", namespace: "default", serviceAccount: "web" });
 * const bundle = TrustBundle.fromPem("cluster.local", rootsPem);
 * verifySvid(certChainPem, bundle).equals(id); // true for an SVID of that identity
 * ```
 *
 * @packageDocumentation
 */

export { type CertificateInput, peerSpiffeId, spiffeIdFromCertificate } from "./certificate-identity.js";
export { SpiffeError, type SpiffeErrorCode, type SpiffeErrorDetails } from "./errors.js";
export { type GenerateKeyPairOptions, generateKeyPair, type KeyAlgorithm, type KeyPair } from "./key-pair.js";
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
export {
  type CertificateChainInput,
  type SvidPurpose,
  type VerifySvidOptions,
  verifySvid,
} from "./verify-svid.js";
export { trustedRootsOf, type X509Svid, x509SvidFromChain } from "./x509-svid.js";
