/**
 * ZDS, the protocol by which Istio's node agent (istio-cni) hands pods and their network
 * namespaces to the node's ztunnel, over a Unix SOCK_SEQPACKET socket with SCM_RIGHTS. Both sides:
 * {@link createZdsClient} for a ztunnel, {@link createZdsServer} for a node agent, and the message
 * codec they share. Linux only at call time, like the rest of `@ambient/netns`.
 *
 * @example
 * ```ts
 * import { createZdsClient } from "@ambient/netns/zds";
 *
 * const zds = createZdsClient({
 *   path: "/var/run/ztunnel/ztunnel.sock",
 *   handler: {
 *     async addWorkload({ uid, workloadInfo, netns }) { await proxies.start(uid, workloadInfo, netns); },
 *     async deleteWorkload(uid) { await proxies.stop(uid); },
 *   },
 * });
 * await zds.ready(); // the node agent's snapshot is reconciled
 * ```
 *
 * @packageDocumentation
 */

export { NetnsError, type NetnsErrorCode } from "../errors.js";
export {
  createZdsClient,
  DEFAULT_ZDS_PATH,
  type ZdsClient,
  type ZdsClientHandler,
  type ZdsClientOptions,
  type ZdsDeleteReason,
  type ZdsWorkload,
} from "./client.js";
export {
  decodeAck,
  decodeHello,
  decodeRequest,
  encodeAck,
  encodeHello,
  encodeRequest,
  ZDS_VERSION,
  type ZdsAck,
  type ZdsRequest,
  type ZdsWorkloadInfo,
} from "./codec.js";
export { createZdsServer, type ZdsServer, type ZdsServerOptions, type ZdsServerWorkload } from "./server.js";
