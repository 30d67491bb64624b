/**
 * Hooks the waypoint handler calls around each request: an authenticator that runs after the head is
 * parsed and before L7 policy (Istio's `RequestAuthentication`, Envoy's `jwt_authn` filter), and an
 * access log sink called once per finished request with Envoy's default access log fields.
 */
import type { HeaderMap } from "./header-filters.js";

/** What a {@link RequestAuthenticator} sees of a request: the one parsed, normalized head. */
export interface RequestAuthInput {
  method: string;
  /** Normalized path without the query. */
  path: string;
  /** `""` or the raw `?...` suffix. */
  query: string;
  host: string;
  /** Lower-case names, as they will be forwarded. */
  headers: Readonly<HeaderMap>;
  /** The Service the tunnel was addressed to, when known. */
  service: { name: string; namespace: string } | undefined;
}

/**
 * The authenticator's verdict. `anonymous`: no credential was presented, the request goes on without a
 * request principal. `authenticated`: the credential verified; its facts reach L7 policy as
 * `request.auth.*`. `rejected`: a credential was presented and failed, answered 401 as Envoy's
 * `jwt_authn` does.
 */
export type RequestAuthOutcome =
  | {
      kind: "anonymous";
      /**
       * Request headers removed before policy and the backend read them: those an authenticator writes
       * from verified credentials only (Istio `outputPayloadToHeader`, `outputClaimToHeaders`), which a
       * client must not be able to send in their place.
       */
      removeHeaders?: readonly string[];
    }
  | {
      kind: "authenticated";
      /**
       * `request.auth.principal`: `<iss>/<sub>`. None for a credential without a subject (a JWT without
       * a non-empty string `sub`): it is valid, its claims count, but it names no principal.
       */
      principal?: string;
      /** `request.auth.audiences`. */
      audiences: readonly string[];
      /** `request.auth.presenter` (the `azp` claim). */
      presenter?: string;
      /** `request.auth.claims`. */
      claims: Record<string, unknown>;
      /**
       * Request headers removed before policy and the backend read them (Istio `forwardOriginalToken:
       * false`, and the headers `addHeaders` writes, which the client's own must not stand in for).
       */
      removeHeaders?: readonly string[];
      /**
       * Request headers added after `removeHeaders` went, from the verified credential (Istio
       * `outputPayloadToHeader`, `outputClaimToHeaders`), in order; policy and the backend read them.
       * A name or value a header cannot carry (CR, LF, NUL) is left out.
       */
      addHeaders?: readonly (readonly [name: string, value: string])[];
      /**
       * Query parameters removed, by name, before policy and the backend read the path (Istio
       * `forwardOriginalToken: false` for a token sent as `access_token` or another `fromParams`).
       */
      removeQueryParams?: readonly string[];
    }
  | { kind: "rejected"; reason: string };

/** Verifies a request's credentials; a throw is answered 401 like a rejection. */
export type RequestAuthenticator = (
  request: RequestAuthInput,
) => RequestAuthOutcome | Promise<RequestAuthOutcome>;

/**
 * One finished request, named as in Istio's JSON access log format (`"-"` where Envoy prints `-`),
 * plus the source and destination principals of the `istio_requests_total` labels.
 */
export interface AccessLogEntry {
  /** `%START_TIME%`, ISO 8601. */
  start_time: string;
  method: string;
  /** Path and query as received, after normalization and before any rewrite. */
  path: string;
  /** `HTTP/1.1` or `HTTP/2`. */
  protocol: string;
  response_code: number;
  /** Envoy's `%RESPONSE_FLAGS%`: `-`, or the flags joined by commas in the order they were set (`URX,UF`). */
  response_flags: string;
  /** Request body bytes. */
  bytes_received: number;
  /** Response body bytes. */
  bytes_sent: number;
  /** Milliseconds from the request's arrival to the end of the exchange. */
  duration: number;
  /**
   * Istio's `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`: the `x-envoy-upstream-service-time` the response
   * carried (milliseconds from the end of the request to the upstream response's head, as Envoy's
   * router sets it); `"-"` for a local reply, a TCP tunnel, or when a route filter removed it.
   */
  upstream_service_time: string;
  x_forwarded_for: string;
  user_agent: string;
  request_id: string;
  authority: string;
  /** `ip:port` of the endpoint the request went to. */
  upstream_host: string;
  /** Istio's cluster name, `outbound|<port>||<service host>`. */
  upstream_cluster: string;
  /**
   * Envoy's `%UPSTREAM_LOCAL_ADDRESS%`: the waypoint's own `ip:port` on the connection the request (or
   * TCP tunnel) went upstream on, for a TCP or TLS socket `connect` returned;
   * `envoy://internal_client_address/` for a stream without an address of its own (an HBONE tunnel
   * stream), as Istio's waypoints log their HBONE upstreams (Envoy's internal client address);
   * `"-"` when no upstream connection was made (a local reply, a connect that failed).
   */
  upstream_local_address: string;
  downstream_remote_address: string;
  downstream_local_address: string;
  /**
   * Envoy's `%REQUESTED_SERVER_NAME%`: the SNI the client sent on its TLS connection, when `handle` was
   * given a `tls.TLSSocket` (after its handshake, as `tls.Server` hands it over); `"-"` for a client that
   * sent none and for a stream that is not TLS, such as the waypoint's HBONE tunnel streams.
   */
  requested_server_name: string;
  /** `namespace/name` of the matched route. */
  route_name: string;
  source_principal: string;
  destination_principal: string;
  /** `<iss>/<sub>` of a verified JWT. */
  request_principal: string;
  grpc_status: string;
  /**
   * Envoy's `%RESPONSE_CODE_DETAILS%`: why a request was answered as it was, with Envoy's names:
   * `via_upstream` (the backend's response), `route_not_found`, `direct_response` (a redirect, a rule
   * without a backend of weight above 0), `cluster_not_found`, `no_healthy_upstream`,
   * `upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}`
   * (the transport failure reason after `|` when the OS gave one; or `{connection_termination}`,
   * `{remote_reset}`, `{remote_refused_stream_reset}`, `{protocol_error}`),
   * `upstream_reset_after_response_started{connection_termination}`, `response_timeout`,
   * `upstream_per_try_timeout`, `stream_idle_timeout`, `downstream_remote_disconnect` (the client's
   * connection went away), `http2.remote_reset` or `http2.remote_refuse` (an HTTP/2 client reset its stream),
   * `jwt_authn_access_denied{Jwt_verification_fails}`, `path_normalization_failed` or a codec's name
   * for a refused head (`http1.headers_too_large`, `http1.codec_error`, ...). A policy denial has what
   * Envoy's RBAC filter sets: `rbac_access_denied_matched_policy[<rule>]`, the rule named as Istio names
   * it (`ns[<ns>]-policy[<name>]-rule[<index>]`, `none` when no ALLOW policy allowed the request).
   * Always `"-"` for a TCP tunnel.
   */
  response_code_details: string;
  /**
   * Envoy's `%CONNECTION_TERMINATION_DETAILS%`: why the waypoint closed a TCP tunnel, set when L4
   * policy refused it (`rbac_access_denied_matched_policy[<rule>]`, as Envoy's network RBAC filter
   * sets it); `"-"` otherwise, and always for HTTP.
   */
  connection_termination_details: string;
  /**
   * Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`, in Istio's default JSON access log: why the
   * connection to the backend could not be made, with `_` for spaces
   * (`delayed_connect_error:_Connection_refused`); `"-"` when none failed or the OS gave no reason.
   */
  upstream_transport_failure_reason: string;
  /**
   * The L7 authorization decision, as Envoy's RBAC filter leaves it in dynamic metadata
   * (`%DYNAMIC_METADATA(envoy.filters.http.rbac)%`); `"-"` when no policy was asked (no evaluator, or
   * the request was answered before policy, e.g. 400 or 401).
   */
  authorization: AccessLogAuthorization | "-";
}

/** What L7 policy decided on a request, and which policy decided it. */
export interface AccessLogAuthorization {
  /** `allowed` or `denied` (Envoy's `enforced_engine_result`). */
  result: "allowed" | "denied";
  /**
   * `namespace/name` of the deciding policy (Envoy's `enforced_effective_policy_id`), as the evaluator
   * names it; `"-"` when none did (allowed because no ALLOW policy applies, or an evaluator that gives no
   * name).
   */
  policy: string;
  /** The deciding policy's action; `"-"` without a policy. */
  action: "ALLOW" | "DENY" | "CUSTOM" | "AUDIT" | "-";
  /** Index of the rule that matched, when the evaluator gives it. */
  rule?: number;
}

/** Receives one {@link AccessLogEntry} per request. */
export type AccessLogSink = (entry: AccessLogEntry) => void;

/**
 * A finished request as the router saw it; its {@link AccessLogEntry} is built only when asked for, so
 * an in-memory history can keep every request at little cost and build entries for those it serves.
 */
export interface FinishedRequest {
  /** Wall-clock time the request arrived, in ms since the epoch (`start_time` of its entry). */
  readonly startedAt: number;
  /** The request's access log entry, built anew on each call. */
  accessLogEntry(): AccessLogEntry;
}

/** Receives one {@link FinishedRequest} per request. */
export type FinishedRequestSink = (request: FinishedRequest) => void;
