/**
 * Linux network-namespace primitives Node lacks, through the koffi FFI: make sockets inside another
 * network namespace (listeners and outbound connections served by Node's own `net`), read a
 * redirected connection's original destination, set SO_MARK and IP_TRANSPARENT, and pass file
 * descriptors over Unix SOCK_SEQPACKET sockets. Importing works everywhere; calls throw
 * `ERR_NETNS_UNSUPPORTED` off Linux. The ZDS protocol is at `@ambient/netns/zds`.
 *
 * @example
 * ```ts
 * import { getOriginalDestination, listenInNetns, openNetns } from "@ambient/netns";
 *
 * const pod = openNetns("/var/run/netns/web-0");
 * const server = await listenInNetns(pod, { host: "0.0.0.0", port: 15001, mark: 0x539 });
 * server.on("connection", (socket) => {
 *   const { address, port } = getOriginalDestination(socket); // where the app was going
 * });
 * ```
 *
 * @packageDocumentation
 */
export { NetnsError, type NetnsErrorCode, type NetnsErrorDetails } from "./errors.js";
export {
  adoptNetns,
  type CreateSocketOptions,
  closeFd,
  createSocketInNetns,
  type NetnsHandle,
  openNetns,
  type SocketFamily,
  type SocketKind,
  withNetns,
} from "./netns.js";
export {
  connectSeqpacket,
  createSeqpacketServer,
  type SeqpacketMessage,
  type SeqpacketOptions,
  SeqpacketServer,
  SeqpacketSocket,
} from "./seqpacket.js";
export { formatIp, type SocketAddress } from "./sockaddr.js";
export {
  type BindInNetnsOptions,
  bindInNetns,
  type ConnectFromNetnsOptions,
  connectFromNetns,
  createListeningSocket,
  type FdLike,
  getOriginalDestination,
  getSocketMark,
  type ListenInNetnsOptions,
  listenInNetns,
  type NetnsSocketOptions,
  setIpFreebind,
  setIpTransparent,
  setSocketMark,
  socketFd,
} from "./tcp.js";
