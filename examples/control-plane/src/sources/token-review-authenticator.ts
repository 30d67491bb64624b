// Authentication as istiod does it on Kubernetes: the caller's bound service-account token is sent to
// the API server's TokenReview, which says whose it is. The node a caller runs on is not taken from
// the token: it is the `spec.nodeName` of the caller's own pod, found in the informer cache and matched
// by uid and service account, so a stolen or replayed token of a deleted pod names no node.

import { SpiffeError, SpiffeId } from "@ambient/spiffe";
import type { Authenticator, Caller } from "@ambient/spiffe/ca";
import type { Metadata } from "@grpc/grpc-js";
import type { KubeConfig } from "@kubernetes/client-node";
import { kubeRequest, type RawKubeObject } from "./kube-client.js";

/** Options of {@link createTokenReviewAuthenticator}. */
export interface TokenReviewAuthenticatorOptions {
  kubeConfig: KubeConfig;
  /** Audiences a token must be bound to. Default `["istio-ca"]`; istiod `TOKEN_AUDIENCES`. */
  audiences?: string[];
  /** Trust domain of the identities. Default `cluster.local`. */
  trustDomain?: string;
  /** A pod from the informer cache (the Kubernetes source's `pod`). */
  pod(namespace: string, name: string): RawKubeObject | undefined;
  /** Longest wait for the API server's answer. Default 10 s. */
  timeoutMs?: number;
}

const POD_NAME = "authentication.kubernetes.io/pod-name";
const POD_UID = "authentication.kubernetes.io/pod-uid";
/** The group of every service account's token. */
const SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts";

function bearerToken(metadata: Metadata): string | undefined {
  for (const v of metadata.get("authorization")) {
    const text = typeof v === "string" ? v : v.toString("utf8");
    const m = /^Bearer\s+(\S+)$/i.exec(text.trim());
    if (m) return m[1];
  }
  return undefined;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
}

function refuse(message: string, cause?: unknown): never {
  throw new SpiffeError("ERR_UNAUTHENTICATED", message, cause === undefined ? {} : { cause });
}

/**
 * An {@link Authenticator} that checks `authorization: Bearer <token>` with the TokenReview API
 * (`authentication.k8s.io/v1`). The caller is `spiffe://<td>/ns/<ns>/sa/<sa>` from the reviewed
 * username, which must be a service account's (group `system:serviceaccounts`); `node` is set only
 * when the token is bound to a pod the informer cache holds with the same uid and service account
 * (the node authorizer then allows impersonation for that node's pods only).
 */
export function createTokenReviewAuthenticator(options: TokenReviewAuthenticatorOptions): Authenticator {
  const audiences = options.audiences ?? ["istio-ca"];
  const trustDomain = options.trustDomain ?? "cluster.local";
  return {
    name: "kubernetes-token-review",
    async authenticate(context) {
      const token = bearerToken(context.metadata);
      if (token === undefined) return undefined;
      let status: TokenReviewStatus;
      try {
        const review = (await kubeRequest(
          options.kubeConfig,
          "POST",
          "/apis/authentication.k8s.io/v1/tokenreviews",
          {
            contentType: "application/json",
            value: {
              apiVersion: "authentication.k8s.io/v1",
              kind: "TokenReview",
              spec: { token, audiences },
            },
          },
          options.timeoutMs ?? 10_000,
        )) as { status?: TokenReviewStatus };
        status = review.status ?? {};
      } catch (cause) {
        refuse(`token review failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause);
      }
      if (status.authenticated !== true)
        refuse(`token not authenticated: ${status.error ?? "no reason given"}`);
      // An API server that ignores spec.audiences answers with its own; the token must carry ours.
      if (!(status.audiences ?? []).some((a) => audiences.includes(a))) {
        refuse(
          `token audiences ${JSON.stringify(status.audiences ?? [])} do not include ${audiences.join(", ")}`,
        );
      }
      // The API server's service-account authenticator puts every token it accepts in this group. A
      // user of another authenticator (a webhook, OIDC) is not a service account, whatever its name
      // says, so it gets no workload identity.
      if (!(status.user?.groups ?? []).includes(SERVICE_ACCOUNTS_GROUP)) {
        refuse(
          `token user ${JSON.stringify(status.user?.username ?? "")} is not in the ${SERVICE_ACCOUNTS_GROUP} group`,
        );
      }
      const parts = (status.user?.username ?? "").split(":");
      if (
        parts.length !== 4 ||
        parts[0] !== "system" ||
        parts[1] !== "serviceaccount" ||
        !parts[2] ||
        !parts[3]
      ) {
        refuse(`token user ${JSON.stringify(status.user?.username ?? "")} is not a service account`);
      }
      const [, , namespace, serviceAccount] = parts as [string, string, string, string];
      const caller: Caller = {
        identity: SpiffeId.fromIstio({ trustDomain, namespace, serviceAccount }),
        authenticator: "kubernetes-token-review",
      };
      const podName = status.user?.extra?.[POD_NAME]?.[0];
      const podUid = status.user?.extra?.[POD_UID]?.[0];
      if (podName !== undefined) {
        caller.pod = { name: podName, ...(podUid === undefined ? {} : { uid: podUid }) };
        const pod = options.pod(namespace, podName);
        const spec = pod?.spec ?? {};
        const podAccount = typeof spec.serviceAccountName === "string" ? spec.serviceAccountName : "default";
        const nodeName = typeof spec.nodeName === "string" ? spec.nodeName : "";
        // The pod the token was issued to, not a later pod of the same name.
        if (
          pod !== undefined &&
          podUid !== undefined &&
          pod.metadata?.uid === podUid &&
          podAccount === serviceAccount &&
          nodeName !== ""
        ) {
          caller.node = nodeName;
        }
      }
      return caller;
    },
  };
}

/** The identities of the pods on `node`, for the CA's node authorizer. */
export function identitiesOfPods(pods: readonly RawKubeObject[], trustDomain = "cluster.local"): SpiffeId[] {
  const out: SpiffeId[] = [];
  for (const pod of pods) {
    const namespace = pod.metadata?.namespace;
    if (typeof namespace !== "string" || namespace === "") continue;
    const sa =
      typeof pod.spec?.serviceAccountName === "string" && pod.spec.serviceAccountName !== ""
        ? pod.spec.serviceAccountName
        : "default";
    const phase = pod.status?.phase;
    // A finished pod holds no workload that could need a certificate.
    if (phase === "Succeeded" || phase === "Failed") continue;
    out.push(SpiffeId.fromIstio({ trustDomain, namespace, serviceAccount: sa }));
  }
  return out;
}
